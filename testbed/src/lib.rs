//! Test bed: real servers (OpenBao, PostgreSQL, registry) and a fake kube-apiserver for tests.
