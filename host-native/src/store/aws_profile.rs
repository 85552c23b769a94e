//! Credentials and region from the AWS shared files (`~/.aws/credentials`, `~/.aws/config`),
//! which `object_store` does not read: the profile named in the configuration, else
//! `AWS_PROFILE`, else `default`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};

/// Static credentials of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `aws_access_key_id`.
    pub access_key_id: String,
    /// `aws_secret_access_key`.
    pub secret_access_key: String,
    /// `aws_session_token`, when temporary.
    pub session_token: Option<String>,
}

/// What a profile provides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// Its credentials, if the credentials file has them.
    pub credentials: Option<Credentials>,
    /// Its region, from the config file.
    pub region: Option<String>,
}

/// Parses an INI file into `section → key → value`.
pub fn parse_ini(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_owned();
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.entry(section.clone())
                .or_default()
                .insert(k.trim().to_lowercase(), v.trim().to_owned());
        }
    }
    out
}

fn aws_file(env: &str, name: &str) -> Option<PathBuf> {
    std::env::var_os(env)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws").join(name)))
}

/// Loads `profile` (or `AWS_PROFILE`, or `default`). A profile named explicitly must exist.
pub fn load(profile: Option<&str>) -> anyhow::Result<Profile> {
    let explicit = profile.is_some();
    let name = profile
        .map(str::to_owned)
        .or_else(|| std::env::var("AWS_PROFILE").ok())
        .unwrap_or_else(|| "default".to_owned());
    let read = |path: Option<PathBuf>| -> anyhow::Result<String> {
        match path {
            Some(p) if p.exists() => {
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
            }
            _ => Ok(String::new()),
        }
    };
    let credentials = parse_ini(&read(aws_file(
        "AWS_SHARED_CREDENTIALS_FILE",
        "credentials",
    ))?);
    let config = parse_ini(&read(aws_file("AWS_CONFIG_FILE", "config"))?);
    let config_section = if name == "default" {
        config.get("default")
    } else {
        config.get(&format!("profile {name}"))
    };
    let creds = credentials.get(&name);
    if explicit && creds.is_none() && config_section.is_none() {
        bail!("AWS profile '{name}' not found in ~/.aws/credentials or ~/.aws/config");
    }
    let from = |m: Option<&BTreeMap<String, String>>, k: &str| m.and_then(|m| m.get(k)).cloned();
    let credentials = match (
        from(creds, "aws_access_key_id").or_else(|| from(config_section, "aws_access_key_id")),
        from(creds, "aws_secret_access_key")
            .or_else(|| from(config_section, "aws_secret_access_key")),
    ) {
        (Some(access_key_id), Some(secret_access_key)) => Some(Credentials {
            access_key_id,
            secret_access_key,
            session_token: from(creds, "aws_session_token")
                .or_else(|| from(config_section, "aws_session_token")),
        }),
        _ => None,
    };
    Ok(Profile {
        credentials,
        region: from(config_section, "region"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_sections_keys_and_comments() {
        let ini = parse_ini(
            "# comment\n[default]\naws_access_key_id = AK\nAWS_Secret_Access_Key=SK\n\n[profile x]\nregion = eu-west-1\n; c\n",
        );
        assert_eq!(ini["default"]["aws_access_key_id"], "AK");
        assert_eq!(ini["default"]["aws_secret_access_key"], "SK");
        assert_eq!(ini["profile x"]["region"], "eu-west-1");
    }
}
