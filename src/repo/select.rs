//! Choosing snapshots: the `--host/--tag/--path` filter of `list`,
//! `forget`, `diff` and the commands that resolve `latest`, and the groups
//! `forget` applies its rules to. Pure: no I/O.
//!
//! The semantics are restic's (`doc/045_working_with_repos.rst`,
//! "Listing all snapshots", and `doc/060_forget.rst`): hosts match any,
//! each `--tag a,b` list matches a snapshot holding all of `a` and `b`
//! and the lists match any, and every `--path` must be one of the
//! snapshot's sources.

use super::SnapshotRecord;

/// A snapshot filter; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Hosts, any of which matches.
    pub hosts: Vec<String>,
    /// Tag lists, any of which matches a snapshot holding all its tags.
    pub tags: Vec<Vec<String>>,
    /// Source paths (trailing `/` ignored), each of which must be one of
    /// the snapshot's sources (restic's `--path`).
    pub paths: Vec<String>,
}

/// `a,b,c` as a tag list (empty pieces dropped: `""` is the empty list,
/// which matches untagged snapshots only when a caller says so).
pub fn tag_list(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

fn trim_path(p: &str) -> &str {
    let t = p.trim_end_matches('/');
    if t.is_empty() && p.starts_with('/') {
        "/"
    } else {
        t
    }
}

impl Filter {
    /// Whether no criterion is set.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.tags.is_empty() && self.paths.is_empty()
    }

    /// Whether `rec` passes.
    pub fn matches(&self, rec: &SnapshotRecord) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&rec.host))
            && (self.tags.is_empty()
                || self
                    .tags
                    .iter()
                    .any(|l| l.iter().all(|t| rec.tags.contains(t))))
            && (self.paths.is_empty() || {
                let have = rec.source_paths();
                self.paths.iter().all(|p| {
                    have.iter()
                        .any(|h| trim_path(p) == trim_path(&String::from_utf8_lossy(h)))
                })
            })
    }
}

/// What `forget` groups snapshots by (`--group-by host,paths,tags`, any
/// subset; `""` puts every snapshot in one group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    /// By host.
    pub host: bool,
    /// By source path.
    pub paths: bool,
    /// By the set of tags.
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl std::str::FromStr for GroupBy {
    type Err = String;

    fn from_str(s: &str) -> Result<GroupBy, String> {
        let mut g = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        for w in s.split(',').filter(|w| !w.is_empty()) {
            match w {
                "host" => g.host = true,
                "paths" | "path" => g.paths = true,
                "tags" | "tag" => g.tags = true,
                _ => {
                    return Err(format!(
                        "{w:?} is not a grouping: give host, paths and/or tags"
                    ))
                }
            }
        }
        Ok(g)
    }
}

/// The key of `rec`'s group under `by`: what it shares with the other
/// members, shown in `forget`'s output and facts.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    /// The host, when grouping by host.
    pub host: Option<String>,
    /// The source, when grouping by paths.
    pub source: Option<String>,
    /// The sorted tags, when grouping by tags.
    pub tags: Option<Vec<String>>,
}

impl GroupBy {
    /// The group of `rec`.
    pub fn key(&self, rec: &SnapshotRecord) -> GroupKey {
        GroupKey {
            host: self.host.then(|| rec.host.clone()),
            source: self.paths.then(|| {
                let paths: Vec<String> = rec
                    .source_paths()
                    .iter()
                    .map(|p| trim_path(&String::from_utf8_lossy(p)).to_owned())
                    .collect();
                paths.join(", ")
            }),
            tags: self.tags.then(|| {
                let mut t = rec.tags.clone();
                t.sort();
                t.dedup();
                t
            }),
        }
    }
}

impl std::fmt::Display for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(h) = &self.host {
            parts.push(format!("host {h}"));
        }
        if let Some(s) = &self.source {
            parts.push(format!("path {s}"));
        }
        if let Some(t) = &self.tags {
            parts.push(format!("tags [{}]", t.join(",")));
        }
        if parts.is_empty() {
            f.write_str("all snapshots")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(host: &str, source: &str, tags: &[&str]) -> SnapshotRecord {
        SnapshotRecord {
            v: 1,
            time: "2026-12-02T00:00:00Z".into(),
            host: host.into(),
            source: source.into(),
            source_b64: None,
            sources: Vec::new(),
            sources_b64: None,
            tier: crate::policy::PreservationTier::Basic,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            policy: (&crate::policy::Policy::default()).into(),
            parent: None,
            entries: crate::repo::EntriesRef {
                id: String::new(),
                count: 0,
                chunks: None,
            },
            stats: Default::default(),
            durable: true,
            original: None,
        }
    }

    #[test]
    fn filters_follow_restics_any_and_all_rules() {
        let r = rec("a", "/srv/data", &["daily", "db"]);
        assert!(Filter::default().matches(&r));
        let f = |hosts: &[&str], tags: &[&str], paths: &[&str]| Filter {
            hosts: hosts.iter().map(|s| (*s).to_owned()).collect(),
            tags: tags.iter().map(|s| tag_list(s)).collect(),
            paths: paths.iter().map(|s| (*s).to_owned()).collect(),
        };
        assert!(f(&["b", "a"], &[], &[]).matches(&r));
        assert!(!f(&["b"], &[], &[]).matches(&r));
        assert!(f(&[], &["daily,db"], &[]).matches(&r));
        assert!(!f(&[], &["daily,web"], &[]).matches(&r));
        assert!(f(&[], &["daily,web", "db"], &[]).matches(&r));
        assert!(f(&[], &[], &["/srv/data/"]).matches(&r));
        assert!(!f(&[], &[], &["/srv/data", "/srv"]).matches(&r));
        assert!(!f(&["a"], &["db"], &["/srv"]).matches(&r));
        // Several sources: every --path must be one of them.
        let mut m = rec("a", "/", &[]);
        m.sources = vec!["/etc".into(), "/srv/data".into()];
        assert!(f(&[], &[], &["/etc", "/srv/data/"]).matches(&m));
        assert!(!f(&[], &[], &["/"]).matches(&m));
        assert!(!f(&[], &[], &["/etc", "/srv"]).matches(&m));
        assert_eq!(
            GroupBy::default().key(&m).source.as_deref(),
            Some("/etc, /srv/data")
        );
    }

    #[test]
    fn groups_take_only_the_chosen_fields() {
        let a = rec("a", "/x/", &["t2", "t1"]);
        let by: GroupBy = "host,tags".parse().unwrap();
        let k = by.key(&a);
        assert_eq!(k.host.as_deref(), Some("a"));
        assert_eq!(k.source, None);
        assert_eq!(k.tags, Some(vec!["t1".into(), "t2".into()]));
        assert_eq!(k.to_string(), "host a, tags [t1,t2]");
        let all: GroupBy = "".parse().unwrap();
        assert_eq!(all.key(&a), GroupKey::default());
        assert_eq!(GroupBy::default().key(&a).source.as_deref(), Some("/x"));
        assert!("hosts".parse::<GroupBy>().is_err());
    }
}
