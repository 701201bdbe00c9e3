//! `skiff login` / `skiff logout`: credentials in docker's config.json, verified against
//! the registry before they are saved.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::{bail, Context, Result};
use clap::Args;
use skiff_image::distribution::Credentials;

use crate::registry_client::{runtime, RegistryOpts};

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// User name.
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (visible in the process list: prefer --password-stdin).
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub registry_opts: RegistryOpts,
    /// The registry: host[:port].
    pub registry: String,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry: host[:port].
    pub registry: String,
}

fn registry_host(s: &str) -> String {
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    s.split('/').next().unwrap_or(s).to_string()
}

pub fn login(a: LoginArgs) -> Result<()> {
    let registry = registry_host(&a.registry);
    let username = match a.username {
        Some(u) => u,
        None => {
            if !std::io::stdin().is_terminal() {
                bail!("no user name: pass -u USER");
            }
            eprint!("Username: ");
            let _ = std::io::stderr().flush();
            let mut u = String::new();
            std::io::stdin().lock().read_line(&mut u)?;
            u.trim().to_string()
        }
    };
    let password = match (a.password, a.password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin are mutually exclusive"),
        (Some(p), false) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            p
        }
        (None, true) => {
            let mut p = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut p)
                .context("reading the password from stdin")?;
            p.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => bail!("no password: pass --password-stdin (or -p)"),
    };
    if username.is_empty() || password.is_empty() {
        bail!("user name and password must not be empty");
    }
    let client = a.registry_opts.client();
    let creds = Credentials { username, password };
    runtime()?.block_on(client.login(&registry, &creds))?;
    println!("Login Succeeded");
    Ok(())
}

pub fn logout(a: LogoutArgs) -> Result<()> {
    let registry = registry_host(&a.registry);
    let client = RegistryOpts::default().client();
    if client.logout(&registry)? {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(())
}
