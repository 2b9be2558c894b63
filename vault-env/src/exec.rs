//! Replacing vault-env with the app: `execvp`-style PATH lookup (no shell), the environment
//! block built once in zeroizing memory, descriptors marked close-on-exec, and `execve`.
//!
//! If `execve` fails, the environment block (the only place left holding secrets) is wiped
//! before the error is returned, so the caller prints it with nothing secret in memory.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::unistd::AccessFlags;
use zeroize::Zeroizing;

use crate::resolve::EnvVar;

/// glibc's `execvp` search path when `PATH` is unset.
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// A failure to find or start the app.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// No command was given.
    #[error(
        "no command given: vault-env needs the app's command as its arguments (vault-env CMD [ARGS...])"
    )]
    NoCommand,
    /// The command is not in PATH.
    #[error("command {command:?} not found in PATH")]
    NotFound {
        /// The command.
        command: OsString,
    },
    /// The command exists but cannot be executed.
    #[error("command {path} is not executable")]
    NotExecutable {
        /// The file found.
        path: PathBuf,
    },
    /// An argument or the path contains a NUL byte.
    #[error("argument {index} contains a NUL byte")]
    NulInArgument {
        /// Which argument (0 is the command).
        index: usize,
    },
    /// A variable's value contains a NUL byte, which an environment cannot carry.
    #[error("variable {name:?}: the value contains a NUL byte and cannot be passed")]
    NulInValue {
        /// The variable.
        name: OsString,
    },
    /// Descriptors could not be marked close-on-exec.
    #[error("mark file descriptors close-on-exec")]
    Cloexec(#[source] std::io::Error),
    /// `execve` itself failed.
    #[error("exec {path}")]
    Exec {
        /// The program.
        path: PathBuf,
        /// The errno.
        #[source]
        source: std::io::Error,
    },
}

/// Finds `command` as `execvp` does: a name with a `/` is used as is, otherwise each `PATH`
/// entry is tried in order (an empty entry is the current directory) and the first
/// executable regular file wins. `path_var` is vault-env's own `PATH`.
pub fn find_program(command: &OsStr, path_var: Option<&OsStr>) -> Result<PathBuf, ExecError> {
    if command.is_empty() {
        return Err(ExecError::NotFound {
            command: command.to_owned(),
        });
    }
    if command.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(command));
    }
    let search = path_var.unwrap_or(OsStr::new(DEFAULT_PATH));
    let mut not_executable = None;
    for dir in search.as_bytes().split(|b| *b == b':') {
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(OsStr::from_bytes(dir))
        };
        let candidate = dir.join(command);
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if nix::unistd::access(&candidate, AccessFlags::X_OK).is_ok() {
            return Ok(candidate);
        }
        not_executable.get_or_insert(candidate);
    }
    Err(match not_executable {
        Some(path) => ExecError::NotExecutable { path },
        None => ExecError::NotFound {
            command: command.to_owned(),
        },
    })
}

/// The app's environment as `NAME=VALUE\0` entries, each in its own zeroizing buffer.
pub struct EnvBlock {
    entries: Vec<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for EnvBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EnvBlock({} entries, <redacted>)", self.entries.len())
    }
}

impl EnvBlock {
    /// Builds the block, consuming (and so wiping) the resolved variables.
    pub fn new(vars: Vec<EnvVar>) -> Result<Self, ExecError> {
        let mut entries = Vec::with_capacity(vars.len());
        for var in vars {
            let name = var.name.as_bytes();
            if var.value.contains(&0) || name.contains(&0) {
                return Err(ExecError::NulInValue {
                    name: var.name.clone(),
                });
            }
            let mut entry = Zeroizing::new(Vec::with_capacity(name.len() + var.value.len() + 2));
            entry.extend_from_slice(name);
            entry.push(b'=');
            entry.extend_from_slice(&var.value);
            entry.push(0);
            crate::hygiene::lock(&entry);
            entries.push(entry);
        }
        Ok(Self { entries })
    }

    /// The number of variables.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no variables.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries as `envp` strings (also for daemon mode's spawn).
    pub(crate) fn as_cstrs(&self) -> Vec<&CStr> {
        self.entries
            .iter()
            .filter_map(|entry| CStr::from_bytes_with_nul(entry).ok())
            .collect()
    }
}

/// Replaces this process with `program`, `argv` (argv[0] as the user wrote it) and `env`.
/// Returns only on failure, after `env` has been wiped.
pub fn exec(program: &Path, argv: &[OsString], env: EnvBlock) -> ExecError {
    let path = match CString::new(program.as_os_str().as_bytes()) {
        Ok(path) => path,
        Err(_) => return ExecError::NulInArgument { index: 0 },
    };
    let mut args = Vec::with_capacity(argv.len());
    for (index, arg) in argv.iter().enumerate() {
        match CString::new(arg.clone().into_vec()) {
            Ok(arg) => args.push(arg),
            Err(_) => return ExecError::NulInArgument { index },
        }
    }
    if let Err(error) = crate::hygiene::cloexec_all_fds() {
        return ExecError::Cloexec(error);
    }
    let envp = env.as_cstrs();
    let errno = match nix::unistd::execve(&path, &args, &envp) {
        Ok(never) => match never {},
        Err(errno) => errno,
    };
    drop(envp);
    // Wipe before anyone prints anything.
    drop(env);
    ExecError::Exec {
        path: program.to_owned(),
        source: std::io::Error::from(errno),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn find_program_searches_path_in_order() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let write = |dir: &Path, mode: u32| {
            let file = dir.join("tool");
            std::fs::write(&file, "#!/bin/true\n").unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            file
        };
        write(a.path(), 0o644);
        let exe = write(b.path(), 0o755);
        let path = std::env::join_paths([a.path(), b.path()]).unwrap();
        assert_eq!(find_program(OsStr::new("tool"), Some(&path)).unwrap(), exe);
        let only_a = a.path().as_os_str();
        // Root may execute nothing without an x bit either: access(X_OK) says so.
        assert!(matches!(
            find_program(OsStr::new("tool"), Some(only_a)),
            Err(ExecError::NotExecutable { .. })
        ));
        assert!(matches!(
            find_program(OsStr::new("nope"), Some(&path)),
            Err(ExecError::NotFound { .. })
        ));
        assert_eq!(
            find_program(OsStr::new("./x/y"), None).unwrap(),
            PathBuf::from("./x/y")
        );
    }

    #[test]
    fn env_block_rejects_nul_values() {
        let vars = vec![EnvVar {
            name: "A".into(),
            value: Zeroizing::new(b"x\0y".to_vec()),
        }];
        assert!(matches!(
            EnvBlock::new(vars),
            Err(ExecError::NulInValue { .. })
        ));
    }

    #[test]
    fn env_block_entries_are_name_equals_value() {
        let vars = vec![
            EnvVar {
                name: "A".into(),
                value: Zeroizing::new(b"1".to_vec()),
            },
            EnvVar {
                name: "B".into(),
                value: Zeroizing::new(Vec::new()),
            },
        ];
        let block = EnvBlock::new(vars).unwrap();
        let texts: Vec<_> = block
            .as_cstrs()
            .iter()
            .map(|c| c.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(texts, ["A=1", "B="]);
    }
}
