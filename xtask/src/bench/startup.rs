//! `secret-startup`: `vault-env` resolving 10 secrets over 3 KV v2 paths and exec'ing
//! `/bin/true`, against `bao agent` rendering the same 10 secrets once through a template and
//! exiting (`exit_after_auth`). Both use the same OpenBao and a ready token (vault-env through
//! `VAULT_TOKEN_FILE`, the agent through `token_file` auto-auth), so neither logs in.
//! Interleaved rounds; wall time medians and peak RSS medians (`/usr/bin/time -f %M`).
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use serde_json::json;
use strongroom_testbed::OpenBao;

use super::measure::{median, peak_rss_kib, run_once, static_vault_env};
use super::{BenchContext, Figure};

const TARGET_RATIO: f64 = 0.2;

/// (path, keys): 10 secrets over 3 paths.
const SECRETS: &[(&str, &[&str])] = &[
    ("bench/app", &["a", "b", "c", "d"]),
    ("bench/db", &["user", "pass", "host"]),
    ("bench/api", &["key", "id", "url"]),
];

pub fn run(context: &BenchContext) -> Result<Vec<Figure>> {
    let vault_env = static_vault_env()?;
    let bao = OpenBao::start().context("starting OpenBao")?;
    let dir = tempfile::tempdir().context("tempdir")?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, bao.root_token()).context("writing the token file")?;

    let mut template = String::new();
    let mut env: Vec<(String, String)> = Vec::new();
    for (path, keys) in SECRETS {
        let data: serde_json::Map<String, serde_json::Value> = keys
            .iter()
            .map(|k| ((*k).to_owned(), json!(format!("{path}-{k}-value"))))
            .collect();
        bao.api(
            "POST",
            &format!("secret/data/{path}"),
            Some(json!({ "data": data })),
        )
        .with_context(|| format!("writing secret/data/{path}"))?;
        for key in *keys {
            let name = format!("S_{}_{}", path.replace('/', "_"), key).to_uppercase();
            env.push((name.clone(), format!("vault:secret/data/{path}#{key}")));
            writeln!(
                template,
                "{name}={{{{ with secret \"secret/data/{path}\" }}}}{{{{ .Data.data.{key} }}}}{{{{ end }}}}"
            )?;
        }
    }
    let rendered = dir.path().join("rendered.env");
    let agent_config = dir.path().join("agent.hcl");
    std::fs::write(
        &agent_config,
        format!(
            "vault {{\n  address = \"{addr}\"\n}}\nexit_after_auth = true\n\
             auto_auth {{\n  method \"token_file\" {{\n    config = {{\n      token_file_path = \"{token}\"\n    }}\n  }}\n}}\n\
             template {{\n  contents = <<EOT\n{template}EOT\n  destination = \"{out}\"\n}}\n",
            addr = bao.addr(),
            token = token_file.display(),
            out = rendered.display(),
        ),
    )
    .context("writing the agent config")?;

    let subject = || {
        let mut c = Command::new(&vault_env);
        c.arg("/bin/true")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("VAULT_ADDR", bao.addr())
            .env("VAULT_TOKEN_FILE", &token_file)
            .envs(env.iter().map(|(k, v)| (k, v)));
        c
    };
    let agent = || {
        let mut c = Command::new(strongroom_testbed::openbao::bao_binary());
        c.args(["agent", "-config"])
            .arg(&agent_config)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", dir.path());
        c
    };

    // Correctness first: the agent must really render all 10 values.
    run_once(&mut agent())?;
    check_rendered(&rendered)?;
    run_once(&mut subject())?;

    let rounds = if context.quick { 3 } else { 9 };
    let (mut t_subject, mut t_agent, mut m_subject, mut m_agent) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        t_subject.push(run_once(&mut subject())?.as_secs_f64() * 1e3);
        std::fs::remove_file(&rendered).context("removing the rendered file")?;
        t_agent.push(run_once(&mut agent())?.as_secs_f64() * 1e3);
        check_rendered(&rendered)?;
        m_subject.push(peak_rss_kib(&subject())? as f64 / 1024.0);
        m_agent.push(peak_rss_kib(&agent())? as f64 / 1024.0);
    }
    Ok(vec![
        Figure::compared(
            "secret-startup",
            "10 secrets / 3 paths then exec: wall time vs bao agent one-shot",
            (median(&t_subject), median(&t_agent)),
            "ms",
            Some(TARGET_RATIO),
        ),
        Figure::compared(
            "secret-startup",
            "10 secrets / 3 paths then exec: peak RSS vs bao agent one-shot",
            (median(&m_subject), median(&m_agent)),
            "MiB",
            Some(TARGET_RATIO),
        ),
    ])
}

/// The agent's output has all 10 `NAME=value` lines with the written values.
fn check_rendered(path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("bao agent did not render {}", path.display()))?;
    for (secret, keys) in SECRETS {
        for key in *keys {
            ensure!(
                text.contains(&format!("={secret}-{key}-value")),
                "bao agent output lacks {secret}#{key}"
            );
        }
    }
    Ok(())
}
