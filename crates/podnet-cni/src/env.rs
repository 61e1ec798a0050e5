//! The CNI runtime environment: `CNI_*` variables, validated per verb.

use crate::error::{CniError, ErrorCode};

/// The CNI verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach a container to the network.
    Add,
    /// Detach it (idempotent).
    Del,
    /// Verify the attachment.
    Check,
    /// Report supported versions.
    Version,
    /// Release resources of attachments that are no longer valid (1.1.0).
    Gc,
    /// Report whether the plugin can service ADD (1.1.0).
    Status,
}

impl Command {
    /// Parses `CNI_COMMAND`.
    pub fn parse(s: &str) -> Result<Self, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            other => {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!("unknown CNI_COMMAND {other:?}"),
                ))
            }
        })
    }

    /// The name as it appears in `CNI_COMMAND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Gc => "GC",
            Command::Status => "STATUS",
        }
    }
}

/// The validated runtime environment of one invocation.
#[derive(Debug, Clone, Default)]
pub struct RuntimeEnv {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (may be empty on DEL).
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: String,
    /// `CNI_PATH`, split on `:`.
    pub path: Vec<String>,
}

impl RuntimeEnv {
    /// Reads and validates the variables `cmd` needs from `get`.
    pub fn from_vars(cmd: Command, get: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let need = |name: &str| -> Result<String, CniError> {
            match get(name) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!("{name} is required for {}", cmd.as_str()),
                )),
            }
        };
        let mut env = RuntimeEnv {
            args: get("CNI_ARGS").unwrap_or_default(),
            path: get("CNI_PATH")
                .unwrap_or_default()
                .split(':')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            netns: get("CNI_NETNS").unwrap_or_default(),
            ..RuntimeEnv::default()
        };
        match cmd {
            Command::Add | Command::Check => {
                env.container_id = need("CNI_CONTAINERID")?;
                env.netns = need("CNI_NETNS")?;
                env.ifname = need("CNI_IFNAME")?;
            }
            Command::Del => {
                env.container_id = need("CNI_CONTAINERID")?;
                env.ifname = need("CNI_IFNAME")?;
            }
            Command::Version | Command::Gc | Command::Status => {}
        }
        if !env.container_id.is_empty() {
            validate_container_id(&env.container_id)?;
        }
        if !env.ifname.is_empty() {
            validate_ifname(&env.ifname)?;
        }
        Ok(env)
    }
}

fn validate_container_id(id: &str) -> Result<(), CniError> {
    let ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            format!("CNI_CONTAINERID {id:?} is not alphanumeric plus _.-"),
        ))
    }
}

fn validate_ifname(name: &str) -> Result<(), CniError> {
    let ok = name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0');
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            format!("CNI_IFNAME {name:?} is not a valid interface name"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            list.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn add_needs_all_variables() {
        let e = RuntimeEnv::from_vars(
            Command::Add,
            vars(&[("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")]),
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidEnvironment);
        assert!(e.msg.contains("CNI_NETNS"));
    }

    #[test]
    fn del_does_not_need_the_namespace() {
        let env = RuntimeEnv::from_vars(
            Command::Del,
            vars(&[("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")]),
        )
        .unwrap();
        assert!(env.netns.is_empty());
    }

    #[test]
    fn bad_names_are_rejected() {
        let bad_if = vars(&[
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "a/b"),
            ("CNI_NETNS", "/x"),
        ]);
        assert!(RuntimeEnv::from_vars(Command::Add, bad_if).is_err());
        let bad_id = vars(&[
            ("CNI_CONTAINERID", "-c"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/x"),
        ]);
        assert!(RuntimeEnv::from_vars(Command::Add, bad_id).is_err());
        assert!(Command::parse("FOO").is_err());
    }
}
