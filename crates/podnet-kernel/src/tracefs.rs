//! The kernel's drop reasons (`skb:kfree_skb` in tracefs), read from a
//! private tracing instance so that the global buffer and anyone else's
//! tracing are left alone. When tracefs is not mounted, it is mounted on a
//! private directory for the duration and unmounted after: the machine is
//! left as found. Reason names come from the event's format file, never from
//! numbers compiled in (they change between kernels).

use std::path::{Path, PathBuf};

use crate::error::{KernelError, Result};

const MOUNTED_AT: &str = "/sys/kernel/tracing";

/// A running capture of drop events.
#[derive(Debug)]
pub struct DropCapture {
    instance: PathBuf,
    mount: Option<PathBuf>,
    done: bool,
}

fn io(op: impl Into<String>, e: std::io::Error) -> KernelError {
    KernelError::io(op, e)
}

/// Mounts tracefs on `dir`.
fn mount_tracefs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io(format!("create {}", dir.display()), e))?;
    let target = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|e| io("tracefs path", std::io::Error::other(e)))?;
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; no data argument.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        let cleanup = match std::fs::remove_dir(dir) {
            Ok(()) => String::new(),
            Err(c) => format!(" (and {} stays: {c})", dir.display()),
        };
        return Err(io(
            format!("mount tracefs on {}{cleanup}", dir.display()),
            e,
        ));
    }
    Ok(())
}

fn unmount(dir: &Path) -> Result<()> {
    let target = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|e| io("tracefs path", std::io::Error::other(e)))?;
    // SAFETY: target is a valid NUL-terminated path.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } < 0 {
        return Err(io(
            format!("unmount {}", dir.display()),
            std::io::Error::last_os_error(),
        ));
    }
    std::fs::remove_dir(dir).map_err(|e| io(format!("remove {}", dir.display()), e))
}

/// `{ 2, "NOT_SPECIFIED" }` pairs of the reason's `__print_symbolic` in a format file.
pub fn reason_names(format: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut rest = format;
    while let Some(open) = rest.find("{ ") {
        rest = &rest[open + 2..];
        let Some(close) = rest.find('}') else { break };
        let item = &rest[..close];
        if let Some((num, name)) = item.split_once(',') {
            let name = name.trim().trim_matches('"');
            if let Ok(n) = num.trim().parse::<u32>() {
                if !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                {
                    out.push((n, name.to_string()));
                }
            }
        }
        rest = &rest[close..];
    }
    out
}

impl DropCapture {
    /// Starts capturing IP packet drops (reasons other than "consumed").
    pub fn start() -> Result<Self> {
        let pid = std::process::id();
        let (root, mount) = if Path::new(MOUNTED_AT).join("instances").is_dir() {
            (PathBuf::from(MOUNTED_AT), None)
        } else {
            let dir = PathBuf::from(format!("/run/podnet-tracefs-{pid}"));
            mount_tracefs(&dir)?;
            (dir.clone(), Some(dir))
        };
        let instance = root.join("instances").join(format!("podnet-trace-{pid}"));
        let mut capture = DropCapture {
            instance: instance.clone(),
            mount,
            done: false,
        };
        if let Err(e) = capture.enable(&root) {
            return Err(match capture.stop() {
                Ok(_) => e,
                Err(cleanup) => KernelError::Protocol {
                    op: "start the drop capture".into(),
                    detail: format!("{e}; then {cleanup}"),
                },
            });
        }
        Ok(capture)
    }

    fn enable(&self, root: &Path) -> Result<()> {
        std::fs::create_dir(&self.instance)
            .map_err(|e| io(format!("create {}", self.instance.display()), e))?;
        let format_path = root.join("events/skb/kfree_skb/format");
        let format = std::fs::read_to_string(&format_path)
            .map_err(|e| io(format!("read {}", format_path.display()), e))?;
        let names = reason_names(&format);
        let first_drop = names
            .iter()
            .find(|(_, n)| n == "NOT_SPECIFIED")
            .map(|(v, _)| *v)
            .unwrap_or(2);
        let event = self.instance.join("events/skb/kfree_skb");
        let filter = format!("reason >= {first_drop} && (protocol == 2048 || protocol == 34525)");
        std::fs::write(event.join("filter"), filter)
            .map_err(|e| io("set the kfree_skb filter", e))?;
        std::fs::write(event.join("enable"), "1").map_err(|e| io("enable kfree_skb", e))
    }

    /// Stops capturing and returns each drop as `REASON at FUNCTION`,
    /// deduplicated, in order; removes the instance (and the mount, if ours).
    pub fn stop(&mut self) -> Result<Vec<String>> {
        if self.done {
            return Ok(Vec::new());
        }
        self.done = true;
        let event = self.instance.join("events/skb/kfree_skb/enable");
        let text = if event.exists() {
            std::fs::write(&event, "0").map_err(|e| io("disable kfree_skb", e))?;
            std::fs::read_to_string(self.instance.join("trace")).unwrap_or_default()
        } else {
            String::new()
        };
        let mut failures = Vec::new();
        if self.instance.exists() {
            if let Err(e) = std::fs::remove_dir(&self.instance) {
                failures.push(format!("remove {}: {e}", self.instance.display()));
            }
        }
        if let Some(m) = &self.mount {
            if let Err(e) = unmount(m) {
                failures.push(e.to_string());
            }
        }
        if !failures.is_empty() {
            return Err(KernelError::Protocol {
                op: "remove the tracefs instance".into(),
                detail: failures.join("; "),
            });
        }
        Ok(parse_drops(&text))
    }
}

impl Drop for DropCapture {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("podnet: {e}");
        }
    }
}

/// `REASON at FUNCTION` for each `kfree_skb:` line, deduplicated.
pub fn parse_drops(trace: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in trace.lines().filter(|l| l.contains("kfree_skb:")) {
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .map(str::to_string)
        };
        let location = field("location=").unwrap_or_default();
        let function = location.split('+').next().unwrap_or_default().to_string();
        let reason = line
            .split("reason: ")
            .nth(1)
            .map(|r| r.trim().to_string())
            .unwrap_or_else(|| "?".into());
        let item = format!("{reason} at {function}");
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_reason_names_and_drops() {
        let format = r#"print fmt: "skbaddr=%p reason: %s", REC->skbaddr, __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 59, "IP_INNOROUTES" })"#;
        let names = reason_names(format);
        assert_eq!(names[0], (2, "NOT_SPECIFIED".into()));
        assert_eq!(names[2], (59, "IP_INNOROUTES".into()));
        let trace = "  <idle>-0 [001] ..s1. 1.2: kfree_skb: skbaddr=0000 rx_sk=0000 protocol=2048 location=ip_error+0x1c/0x1f0 reason: IP_INNOROUTES\n";
        assert_eq!(
            parse_drops(trace),
            vec!["IP_INNOROUTES at ip_error".to_string()]
        );
    }
}
