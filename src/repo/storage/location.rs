//! Repository locations: a local path, `s3:…` or `sftp:…` (restic's
//! spelling, `docs/FORMAT.md`, "Remote repositories").
//!
//! Pure: parsing only, no I/O.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local directory.
    Local(PathBuf),
    /// An S3-compatible bucket: `s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]`.
    S3 {
        /// `http[s]://HOST[:PORT]`.
        endpoint: String,
        /// The bucket name.
        bucket: String,
        /// The key prefix inside the bucket (no leading or trailing `/`;
        /// empty for the bucket's top).
        prefix: String,
    },
    /// A directory on an SFTP server: `sftp:[USER@]HOST[:PORT]:/PATH`.
    Sftp {
        /// The user, when given.
        user: Option<String>,
        /// The host name or address.
        host: String,
        /// The port, when given (else ssh's default or configuration).
        port: Option<u16>,
        /// The absolute directory on the server.
        path: String,
    },
}

/// Why a location cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("repository location {given:?}: {why}")]
pub struct BadLocation {
    /// The location as given.
    pub given: String,
    /// What is wrong.
    pub why: String,
}

fn bad(given: &str, why: &str) -> BadLocation {
    BadLocation {
        given: given.to_owned(),
        why: why.to_owned(),
    }
}

impl Location {
    /// Parses `given`: `s3:` and `sftp:` prefixes name remote
    /// repositories; anything else is a local path (write `./s3:x` for a
    /// directory of that name).
    ///
    /// # Errors
    ///
    /// [`BadLocation`] for a malformed `s3:` or `sftp:` location: no
    /// scheme or bucket, a bucket name S3 does not allow (3–63 lower-case
    /// letters, digits, `.` and `-`), a relative SFTP path, a bad port.
    pub fn parse(given: &Path) -> Result<Location, BadLocation> {
        let Some(s) = given.to_str() else {
            return Ok(Location::Local(given.to_owned()));
        };
        if let Some(rest) = s.strip_prefix("s3:") {
            let (scheme, after) = rest
                .split_once("://")
                .ok_or_else(|| bad(s, "expected s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]"))?;
            if scheme != "http" && scheme != "https" {
                return Err(bad(s, "the scheme must be http or https"));
            }
            let (host, path) = after.split_once('/').unwrap_or((after, ""));
            if host.is_empty() || host.contains(['@', '?', '#']) {
                return Err(bad(s, "expected a host after the scheme"));
            }
            let path = path.trim_matches('/');
            let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
            let bucket_ok = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                })
                && !bucket.starts_with(['-', '.'])
                && !bucket.ends_with(['-', '.']);
            if !bucket_ok {
                return Err(bad(
                    s,
                    "the bucket name must be 3 to 63 lower-case letters, digits, '.' or '-'",
                ));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|c| c == ".." || c == ".") || prefix.contains("//") {
                return Err(bad(
                    s,
                    "the prefix may not hold '.', '..' or empty components",
                ));
            }
            return Ok(Location::S3 {
                endpoint: format!("{scheme}://{host}"),
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        if let Some(rest) = s.strip_prefix("sftp:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let (hostpart, path) = rest
                .split_once(":/")
                .map(|(h, p)| (h, format!("/{p}")))
                .ok_or_else(|| bad(s, "expected sftp:[USER@]HOST[:PORT]:/PATH"))?;
            let (user, hostport) = match hostpart.rsplit_once('@') {
                Some((u, h)) if !u.is_empty() => (Some(u.to_owned()), h),
                Some(_) => return Err(bad(s, "an empty user name")),
                None => (None, hostpart),
            };
            let (host, port) = match hostport.rsplit_once(':') {
                Some((h, p)) => (
                    h,
                    Some(
                        p.parse::<u16>()
                            .map_err(|_| bad(s, "the port must be 1 to 65535"))?,
                    ),
                ),
                None => (hostport, None),
            };
            if host.is_empty() || host.starts_with('-') || host.contains(char::is_whitespace) {
                return Err(bad(s, "expected a host name"));
            }
            let path = path.trim_end_matches('/').to_owned();
            if path.split('/').any(|c| c == "..") {
                return Err(bad(s, "the path may not hold '..'"));
            }
            return Ok(Location::Sftp {
                user,
                host: host.to_owned(),
                port,
                path: if path.is_empty() { "/".into() } else { path },
            });
        }
        Ok(Location::Local(given.to_owned()))
    }

    /// Whether the repository is off this machine.
    pub fn is_remote(&self) -> bool {
        !matches!(self, Location::Local(_))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3 {
                endpoint,
                bucket,
                prefix,
            } => {
                write!(f, "s3:{endpoint}/{bucket}")?;
                if !prefix.is_empty() {
                    write!(f, "/{prefix}")?;
                }
                Ok(())
            }
            Location::Sftp {
                user,
                host,
                port,
                path,
            } => {
                f.write_str("sftp:")?;
                if let Some(u) = user {
                    write!(f, "{u}@")?;
                }
                f.write_str(host)?;
                if let Some(p) = port {
                    write!(f, ":{p}")?;
                }
                write!(f, ":{path}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Location, BadLocation> {
        Location::parse(Path::new(s))
    }

    #[test]
    fn s3_locations() {
        assert_eq!(
            p("s3:http://127.0.0.1:8333/backups/host/a").unwrap(),
            Location::S3 {
                endpoint: "http://127.0.0.1:8333".into(),
                bucket: "backups".into(),
                prefix: "host/a".into()
            }
        );
        let l = p("s3:https://s3.example.org/bkt/").unwrap();
        assert_eq!(l.to_string(), "s3:https://s3.example.org/bkt");
        for bad in [
            "s3:",
            "s3:ftp://h/b",
            "s3:http:///bkt",
            "s3:http://h",
            "s3:http://h/B_ad",
            "s3:http://h/ab",
            "s3:http://h/bkt/../x",
            "s3:http://u@h/bkt",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sftp_locations() {
        assert_eq!(
            p("sftp:backup@host.example:2222:/srv/snap").unwrap(),
            Location::Sftp {
                user: Some("backup".into()),
                host: "host.example".into(),
                port: Some(2222),
                path: "/srv/snap".into()
            }
        );
        let l = p("sftp:host:/r/").unwrap();
        assert_eq!(l.to_string(), "sftp:host:/r");
        for bad in [
            "sftp:host",
            "sftp:host:rel",
            "sftp:@h:/x",
            "sftp:h:99999:/x",
            "sftp:-oProxyCommand=x:/p",
            "sftp:h:/a/../b",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn anything_else_is_local() {
        assert_eq!(
            p("./s3:x").unwrap(),
            Location::Local(PathBuf::from("./s3:x"))
        );
        assert!(!p("/var/backups").unwrap().is_remote());
    }
}
