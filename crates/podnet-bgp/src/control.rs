//! BIRD's control socket. One request line; the reply is lines that start
//! with a four-digit code and `-` (more follow) or a space (the last), and
//! continuation lines that start with a space and belong to the code before
//! them. Codes below 1000 end a command, 1000-1999 are table rows, 2000-2999
//! table headers, 8000-8999 run-time errors and 9000-9999 parse errors
//! (BIRD's `doc/reply_codes`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long BIRD may take to answer one command.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong talking to BIRD.
#[derive(Debug, thiserror::Error)]
pub enum BgpError {
    /// The control socket cannot be reached (BIRD not running, wrong path).
    #[error("BIRD control socket {path}: {source} (is bird running with -s {path}?)")]
    Unreachable {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// BIRD answered with an error code.
    #[error("BIRD refused `{command}`: {code} {message}")]
    Refused {
        /// The command sent.
        command: String,
        /// BIRD's reply code.
        code: u16,
        /// Its message (every line of it).
        message: String,
    },
    /// Something that is not BIRD's protocol came back.
    #[error("BIRD control socket {path}: {detail}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
}

/// One reply: `(code, text)` lines, continuations joined to their code's text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// The lines, in order.
    pub lines: Vec<(u16, String)>,
}

impl Reply {
    /// The first line with an error code (8000 and up), if any.
    pub fn error(&self) -> Option<&(u16, String)> {
        self.lines.iter().find(|(c, _)| *c >= 8000)
    }

    /// Whether a line has `code`.
    pub fn has(&self, code: u16) -> bool {
        self.lines.iter().any(|(c, _)| *c == code)
    }
}

/// A BGP or other protocol as `show protocols` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    /// Its name (`node2`, `device1`).
    pub name: String,
    /// Its kind (`BGP`, `Device`, `Kernel`).
    pub proto: String,
    /// Its table (`master4`, `---`).
    pub table: String,
    /// `up`, `start`, `down`.
    pub state: String,
    /// Since when.
    pub since: String,
    /// BGP's state detail (`Established`, `Active`, `Connect`), when given.
    pub info: String,
}

/// A connection to BIRD's control socket.
pub struct BirdControl {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl BirdControl {
    /// Connects and reads BIRD's greeting (`0001 BIRD 2.0.12 ready.`).
    pub fn connect(path: &Path) -> Result<Self, BgpError> {
        let unreachable = |source| BgpError::Unreachable {
            path: path.to_path_buf(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(unreachable)?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .map_err(unreachable)?;
        let writer = stream.try_clone().map_err(unreachable)?;
        let mut control = BirdControl {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = control.read_reply()?;
        if !greeting.has(1) {
            return Err(control.protocol(format!("no greeting: {greeting:?}")));
        }
        Ok(control)
    }

    fn protocol(&self, detail: String) -> BgpError {
        BgpError::Protocol {
            path: self.path.clone(),
            detail,
        }
    }

    /// Sends one command and reads its whole reply; an error code is an error.
    pub fn request(&mut self, command: &str) -> Result<Reply, BgpError> {
        writeln!(self.writer, "{command}").map_err(|e| self.protocol(format!("send: {e}")))?;
        let reply = self.read_reply()?;
        if let Some((code, _)) = reply.error() {
            let message = reply
                .lines
                .iter()
                .map(|(_, t)| t.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(BgpError::Refused {
                command: command.to_string(),
                code: *code,
                message,
            });
        }
        Ok(reply)
    }

    /// `configure check "FILE"`: BIRD parses the file without applying it.
    pub fn configure_check(&mut self, file: &Path) -> Result<(), BgpError> {
        let command = format!("configure check \"{}\"", file.display());
        let reply = self.request(&command)?;
        if reply.has(20) {
            return Ok(());
        }
        Err(self.protocol(format!("`{command}` answered {reply:?}")))
    }

    /// `configure "FILE"`: BIRD applies the file (peers that did not change keep their sessions).
    pub fn configure(&mut self, file: &Path) -> Result<(), BgpError> {
        let command = format!("configure \"{}\"", file.display());
        let reply = self.request(&command)?;
        // 0003 Reconfigured, 0004 in progress, 0005 queued, 0019 nothing to do.
        if [3, 4, 5, 19].iter().any(|c| reply.has(*c)) {
            return Ok(());
        }
        Err(self.protocol(format!("`{command}` answered {reply:?}")))
    }

    /// `down`: BIRD shuts down, telling its peers (a Cease), so they drop
    /// its routes at once. BIRD may close the socket before it answers.
    pub fn down(&mut self) -> Result<(), BgpError> {
        match self.request("down") {
            Ok(_) => Ok(()),
            Err(BgpError::Protocol { detail, .. }) if detail.starts_with("closed") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A command's reply as text, one line per reply line (for people:
    /// `show route`, `show protocols all NAME`).
    pub fn text(&mut self, command: &str) -> Result<String, BgpError> {
        let reply = self.request(command)?;
        let lines: Vec<&str> = reply
            .lines
            .iter()
            .filter(|(code, _)| *code >= 1000 || *code == 0)
            .map(|(_, t)| t.as_str())
            .collect();
        Ok(lines.join("\n"))
    }

    /// `show protocols`: every protocol and its state.
    pub fn show_protocols(&mut self) -> Result<Vec<Protocol>, BgpError> {
        Ok(parse_protocols(&self.request("show protocols")?))
    }

    /// Reads lines until the one whose code is followed by a space.
    fn read_reply(&mut self) -> Result<Reply, BgpError> {
        let mut reply = Reply::default();
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|e| self.protocol(format!("read: {e}")))?;
            if n == 0 {
                return Err(self.protocol("closed in the middle of a reply".into()));
            }
            match parse_line(line.trim_end_matches('\n')) {
                Line::Coded(code, last, text) => {
                    reply.lines.push((code, text));
                    if last {
                        return Ok(reply);
                    }
                }
                Line::More(text) => match reply.lines.last_mut() {
                    Some((code, _)) => {
                        let code = *code;
                        reply.lines.push((code, text));
                    }
                    None => return Err(self.protocol(format!("continuation first: {line:?}"))),
                },
            }
        }
    }
}

/// One line of a reply.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// `CODE-text` (more follow) or `CODE text` (the last).
    Coded(u16, bool, String),
    /// ` text`: a continuation of the code before.
    More(String),
}

fn parse_line(line: &str) -> Line {
    let code = line.get(..4).and_then(|c| c.parse::<u16>().ok());
    match (code, line.as_bytes().get(4)) {
        (Some(code), Some(b'-')) => Line::Coded(code, false, line[5..].to_string()),
        (Some(code), Some(b' ')) => Line::Coded(code, true, line[5..].to_string()),
        (Some(code), None) => Line::Coded(code, true, String::new()),
        _ => Line::More(line.strip_prefix(' ').unwrap_or(line).to_string()),
    }
}

/// The rows (code 1002) of a `show protocols` reply.
fn parse_protocols(reply: &Reply) -> Vec<Protocol> {
    reply
        .lines
        .iter()
        .filter(|(code, _)| *code == 1002)
        .filter_map(|(_, text)| {
            let mut f = text.split_whitespace();
            let (name, proto, table, state) = (f.next()?, f.next()?, f.next()?, f.next()?);
            // `since` is a time, or a date and a time.
            let rest: Vec<&str> = f.collect();
            let (since, info) = match rest.as_slice() {
                [d, t, info @ ..] if d.contains('-') => (format!("{d} {t}"), info.join(" ")),
                [t, info @ ..] => (t.to_string(), info.join(" ")),
                [] => (String::new(), String::new()),
            };
            Some(Protocol {
                name: name.into(),
                proto: proto.into(),
                table: table.into(),
                state: state.into(),
                since,
                info,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_protocol_rows_read_as_bird_writes_them() {
        assert_eq!(
            parse_line("0001 BIRD 2.0.12 ready."),
            Line::Coded(1, true, "BIRD 2.0.12 ready.".into())
        );
        assert_eq!(
            parse_line("2002-Name Proto"),
            Line::Coded(2002, false, "Name Proto".into())
        );
        assert_eq!(parse_line(" continued"), Line::More("continued".into()));
        assert_eq!(parse_line("0000"), Line::Coded(0, true, String::new()));
        let reply = Reply {
            lines: vec![
                (2002, "Name       Proto      Table      State  Since         Info".into()),
                (1002, "device1    Device     ---        up     12:00:01.123  ".into()),
                (1002, "node2      BGP        ---        start  12:00:01.124  Active        Socket: Connection refused".into()),
                (0, String::new()),
            ],
        };
        let p = parse_protocols(&reply);
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].name.as_str(), p[0].state.as_str(), p[0].info.as_str()),
            ("device1", "up", "")
        );
        assert_eq!(p[1].proto, "BGP");
        assert_eq!(p[1].info, "Active Socket: Connection refused");
        let refused = Reply {
            lines: vec![(9001, "syntax error, unexpected CF_SYM_UNDEFINED".into())],
        };
        assert_eq!(refused.error().map(|e| e.0), Some(9001));
    }
}
