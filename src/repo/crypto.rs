//! Repository encryption (`docs/FORMAT.md`, "Encryption"): the master
//! key, sealing and opening with XChaCha20-Poly1305, keyed content ids,
//! and the Argon2id derivation that wraps the master key in a key file.
//!
//! No cryptography is written here: the AEAD is RustCrypto's
//! `chacha20poly1305` (XChaCha20-Poly1305, draft-irtf-cfrg-xchacha-03 over
//! RFC 8439), the key derivation RustCrypto's `argon2` (Argon2id, RFC
//! 9106), the keyed hash BLAKE3's keyed mode (the BLAKE3 paper, section
//! 2.3). This module only decides which key seals what and how the
//! sealed bytes are laid out:
//!
//! ```text
//! sealed = nonce (24 random bytes) | ciphertext | Poly1305 tag (16)
//! ```
//!
//! with the kind of what is sealed ([`Ad`]) as associated data, so sealed
//! bytes of one kind never open as another.
//!
//! Side effects: reads the kernel's random source (`getrandom(2)`) for
//! nonces, keys and salts; Argon2id uses the memory its parameters say.

use std::sync::Arc;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

/// Bytes a sealed message has beyond its plaintext: nonce and tag.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes of the master key: 32 for the AEAD, 32 for keyed BLAKE3 ids.
pub const MASTER_KEY_LEN: usize = 64;

/// What a sealed message is, bound into it as associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ad {
    /// One blob's stored form in a pack.
    Blob,
    /// A pack's footer.
    Footer,
    /// An index file.
    Index,
    /// A snapshot record.
    Snapshot,
    /// The sealed part of `config.json`.
    Config,
    /// The master key inside a key file (sealed with the password's key).
    Key,
}

impl Ad {
    fn bytes(self) -> &'static [u8] {
        match self {
            Ad::Blob => b"snap/3 blob",
            Ad::Footer => b"snap/3 pack footer",
            Ad::Index => b"snap/3 index",
            Ad::Snapshot => b"snap/3 snapshot",
            Ad::Config => b"snap/3 config",
            Ad::Key => b"snap/3 master key",
        }
    }
}

/// A repository's master key: 64 random bytes, zeroed when dropped.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; MASTER_KEY_LEN]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A new random master key.
    ///
    /// # Errors
    ///
    /// `getrandom(2)`'s error.
    pub fn generate() -> std::io::Result<MasterKey> {
        let mut k = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        crate::sys::random_bytes(&mut k[..])?;
        Ok(MasterKey(k))
    }

    /// The key from its bytes (as a key file holds them).
    ///
    /// # Errors
    ///
    /// A message when `bytes` is not [`MASTER_KEY_LEN`] long.
    pub fn from_bytes(bytes: &[u8]) -> Result<MasterKey, String> {
        let arr: [u8; MASTER_KEY_LEN] = bytes.try_into().map_err(|_| {
            format!(
                "a master key is {MASTER_KEY_LEN} bytes, not {}",
                bytes.len()
            )
        })?;
        Ok(MasterKey(Zeroizing::new(arr)))
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0[..]
    }
}

struct Keys {
    aead: XChaCha20Poly1305,
    id_key: Zeroizing<[u8; 32]>,
}

/// How a repository's bytes are protected: not at all ([`Crypto::plain`],
/// ids are BLAKE3-256) or sealed under a master key ([`Crypto::sealed`],
/// ids are keyed BLAKE3-256). Cheap to clone.
#[derive(Clone, Default)]
pub struct Crypto(Option<Arc<Keys>>);

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_encrypted() {
            "Crypto(sealed)"
        } else {
            "Crypto(plain)"
        })
    }
}

impl Crypto {
    /// No encryption: [`Crypto::seal`] and [`Crypto::open`] pass bytes
    /// through, ids are plain BLAKE3.
    pub fn plain() -> Crypto {
        Crypto(None)
    }

    /// Sealing under `key`: its first 32 bytes are the XChaCha20-Poly1305
    /// key, the last 32 the BLAKE3 key of content ids.
    pub fn sealed(key: &MasterKey) -> Crypto {
        let b = key.as_bytes();
        let aead = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&b[..32]));
        let mut id_key = Zeroizing::new([0u8; 32]);
        id_key.copy_from_slice(&b[32..]);
        Crypto(Some(Arc::new(Keys { aead, id_key })))
    }

    /// Whether bytes are sealed.
    pub fn is_encrypted(&self) -> bool {
        self.0.is_some()
    }

    /// Bytes sealing adds to a message (0 without encryption).
    pub fn overhead(&self) -> usize {
        if self.is_encrypted() {
            OVERHEAD
        } else {
            0
        }
    }

    /// The content id of `data`: BLAKE3-256, keyed with the repository's
    /// id key when encrypted (so an id does not tell whether a known
    /// content is stored).
    pub fn id(&self, data: &[u8]) -> blake3::Hash {
        match &self.0 {
            None => blake3::hash(data),
            Some(k) => blake3::keyed_hash(&k.id_key, data),
        }
    }

    /// A hasher giving [`Crypto::id`] of what it is fed.
    pub fn hasher(&self) -> blake3::Hasher {
        match &self.0 {
            None => blake3::Hasher::new(),
            Some(k) => blake3::Hasher::new_keyed(&k.id_key),
        }
    }

    /// The bytes to store for the message made of `parts` in order: the
    /// message itself without encryption, else nonce, ciphertext and tag,
    /// with `ad` bound in.
    ///
    /// # Errors
    ///
    /// `getrandom(2)`'s error; the AEAD's (a message over 256 GiB).
    pub fn seal(&self, ad: Ad, parts: &[&[u8]]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.seal_into(ad, parts, &mut out)?;
        Ok(out)
    }

    /// [`Crypto::seal`] into `out` (cleared first; its allocation is
    /// reused, so a caller that keeps buffers spares the page faults of a
    /// new one per message).
    ///
    /// # Errors
    ///
    /// As [`Crypto::seal`].
    pub fn seal_into(&self, ad: Ad, parts: &[&[u8]], out: &mut Vec<u8>) -> std::io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        out.clear();
        out.reserve(len + self.overhead());
        let Some(k) = &self.0 else {
            for p in parts {
                out.extend_from_slice(p);
            }
            return Ok(());
        };
        out.resize(NONCE_LEN, 0);
        nonce(&mut out[..NONCE_LEN])?;
        for p in parts {
            out.extend_from_slice(p);
        }
        let (nonce, msg) = out.split_at_mut(NONCE_LEN);
        let tag = k
            .aead
            .encrypt_in_place_detached(XNonce::from_slice(nonce), ad.bytes(), msg)
            .map_err(|_| std::io::Error::other("the message is too long to seal"))?;
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// [`Crypto::seal`] of a message the caller owns, sealed where it lies
    /// (no copy into a new buffer; the nonce is put in front by moving the
    /// bytes up, which for a blob is cheaper than a second buffer).
    ///
    /// # Errors
    ///
    /// As [`Crypto::seal`].
    pub fn seal_vec(&self, ad: Ad, mut msg: Vec<u8>) -> std::io::Result<Vec<u8>> {
        let Some(k) = &self.0 else {
            return Ok(msg);
        };
        msg.reserve(OVERHEAD);
        let mut n = [0u8; NONCE_LEN];
        nonce(&mut n)?;
        let tag = k
            .aead
            .encrypt_in_place_detached(XNonce::from_slice(&n), ad.bytes(), &mut msg)
            .map_err(|_| std::io::Error::other("the message is too long to seal"))?;
        msg.extend_from_slice(&tag);
        msg.splice(0..0, n);
        Ok(msg)
    }

    /// The message sealed in `stored` (taken and returned without
    /// encryption; opened in place otherwise).
    ///
    /// # Errors
    ///
    /// A message when `stored` is shorter than [`OVERHEAD`] or does not
    /// open: altered, sealed under another key, or sealed as another kind.
    pub fn open(&self, ad: Ad, mut stored: Vec<u8>) -> Result<Vec<u8>, String> {
        let Some(k) = &self.0 else {
            return Ok(stored);
        };
        open_in_place(&k.aead, ad, &mut stored)?;
        Ok(stored)
    }

    /// [`Crypto::open`] into `out` (cleared first), from borrowed bytes.
    ///
    /// # Errors
    ///
    /// As [`Crypto::open`].
    pub fn open_into(&self, ad: Ad, stored: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        out.clear();
        out.extend_from_slice(stored);
        if let Some(k) = &self.0 {
            open_in_place(&k.aead, ad, out)?;
        }
        Ok(())
    }
}

/// Fills `out` with random bytes for a nonce: from a per-thread buffer
/// of `getrandom(2)` output, refilled 4 KiB at a time (one system call per
/// 170 nonces rather than one per blob). XChaCha20's 192-bit nonces are
/// drawn at random (draft-irtf-cfrg-xchacha-03, section 3.1: random
/// nonces are safe at this size).
fn nonce(out: &mut [u8]) -> std::io::Result<()> {
    thread_local! {
        static POOL: std::cell::RefCell<(Zeroizing<[u8; 4096]>, usize)> =
            std::cell::RefCell::new((Zeroizing::new([0u8; 4096]), 4096));
    }
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let (buf, used) = &mut *p;
        if *used + out.len() > buf.len() {
            crate::sys::random_bytes(&mut buf[..])?;
            *used = 0;
        }
        out.copy_from_slice(&buf[*used..*used + out.len()]);
        // Never hand out the same bytes twice.
        buf[*used..*used + out.len()].fill(0);
        *used += out.len();
        Ok(())
    })
}

fn open_in_place(aead: &XChaCha20Poly1305, ad: Ad, buf: &mut Vec<u8>) -> Result<(), String> {
    let n = buf.len();
    if n < OVERHEAD {
        return Err(format!(
            "{n} sealed bytes are fewer than a nonce and a tag ({OVERHEAD})"
        ));
    }
    let (nonce, rest) = buf.split_at_mut(NONCE_LEN);
    let (msg, tag) = rest.split_at_mut(n - OVERHEAD);
    aead.decrypt_in_place_detached(
        XNonce::from_slice(nonce),
        ad.bytes(),
        msg,
        Tag::from_slice(tag),
    )
    .map_err(|_| "the ciphertext does not authenticate (altered, or sealed under another key)")?;
    buf.truncate(n - TAG_LEN);
    buf.drain(..NONCE_LEN);
    Ok(())
}

/// Argon2id parameters of a key file (RFC 9106, section 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory, in KiB.
    pub m_cost: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// What `snap init --encrypt` and `snap key add` use: 64 MiB, 3
    /// passes, one lane (RFC 9106's second recommended option, with the
    /// one lane the `argon2` crate computes without threads).
    pub const DEFAULT: KdfParams = KdfParams {
        m_cost: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };
    /// The most memory a key file may ask for (1 GiB, in KiB): a hostile
    /// repository cannot make opening it take more.
    pub const M_COST_MAX: u32 = 1 << 20;
    /// The most passes a key file may ask for.
    pub const T_COST_MAX: u32 = 64;
    /// The most lanes a key file may ask for.
    pub const P_COST_MAX: u32 = 16;

    /// Refuses parameters past the bounds above, or below Argon2's own
    /// minimums.
    ///
    /// # Errors
    ///
    /// A message naming the parameter.
    pub fn check(self) -> Result<(), String> {
        if self.m_cost > Self::M_COST_MAX
            || self.t_cost > Self::T_COST_MAX
            || self.p_cost > Self::P_COST_MAX
        {
            return Err(format!(
                "Argon2id parameters m={} KiB t={} p={} are over what snap accepts (m <= {} KiB, t <= {}, p <= {})",
                self.m_cost,
                self.t_cost,
                self.p_cost,
                Self::M_COST_MAX,
                Self::T_COST_MAX,
                Self::P_COST_MAX
            ));
        }
        argon2::Params::new(self.m_cost, self.t_cost, self.p_cost, Some(32))
            .map(|_| ())
            .map_err(|e| format!("Argon2id parameters: {e}"))
    }
}

/// The 32-byte key Argon2id derives from `password` and `salt`.
///
/// # Errors
///
/// A message for parameters [`KdfParams::check`] refuses, or a salt
/// Argon2 refuses (under 8 bytes).
pub fn derive(
    password: &[u8],
    salt: &[u8],
    params: KdfParams,
) -> Result<Zeroizing<[u8; 32]>, String> {
    params.check()?;
    let p = argon2::Params::new(params.m_cost, params.t_cost, params.p_cost, Some(32))
        .map_err(|e| format!("Argon2id parameters: {e}"))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(password, salt, &mut out[..])
        .map_err(|e| format!("Argon2id: {e}"))?;
    Ok(out)
}

/// The AEAD keyed with a derived key (its id key is unused).
fn wrapper(derived: &[u8; 32]) -> Crypto {
    let aead = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(derived));
    Crypto(Some(Arc::new(Keys {
        aead,
        id_key: Zeroizing::new([0u8; 32]),
    })))
}

/// Seals `master` under the key derived from `password` (a new random
/// 16-byte salt): returns the salt and the sealed key, as a key file
/// holds them.
///
/// # Errors
///
/// As [`derive`]; `getrandom(2)`'s error as text.
pub fn wrap(
    master: &MasterKey,
    password: &[u8],
    params: KdfParams,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut salt = vec![0u8; 16];
    crate::sys::random_bytes(&mut salt).map_err(|e| format!("getrandom: {e}"))?;
    let wrapper = wrapper(&*derive(password, &salt, params)?);
    let sealed = wrapper
        .seal(Ad::Key, &[master.as_bytes()])
        .map_err(|e| e.to_string())?;
    Ok((salt, sealed))
}

/// The master key sealed in `sealed` under the key derived from
/// `password` and `salt`; `None` when it does not open (another password,
/// or an altered key file).
///
/// # Errors
///
/// As [`derive`].
pub fn unwrap(
    sealed: &[u8],
    password: &[u8],
    salt: &[u8],
    params: KdfParams,
) -> Result<Option<MasterKey>, String> {
    let wrapper = wrapper(&*derive(password, salt, params)?);
    match wrapper.open(Ad::Key, sealed.to_vec()) {
        Ok(plain) => {
            let plain = Zeroizing::new(plain);
            MasterKey::from_bytes(&plain).map(Some)
        }
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    };

    #[test]
    fn sealed_bytes_open_only_with_the_key_and_kind_they_were_sealed_with() {
        let k = MasterKey::generate().unwrap();
        let c = Crypto::sealed(&k);
        let s = c.seal(Ad::Index, &[b"hello ", b"world"]).unwrap();
        assert_eq!(s.len(), 11 + OVERHEAD);
        assert!(!s.windows(5).any(|w| w == b"hello"));
        assert_eq!(c.open(Ad::Index, s.clone()).unwrap(), b"hello world");
        let mut out = Vec::new();
        c.open_into(Ad::Index, &s, &mut out).unwrap();
        assert_eq!(out, b"hello world");
        // Another kind, another key, a flipped bit, a short message.
        assert!(c.open(Ad::Snapshot, s.clone()).is_err());
        let other = Crypto::sealed(&MasterKey::generate().unwrap());
        assert!(other.open(Ad::Index, s.clone()).is_err());
        for i in [0, 24, s.len() - 1] {
            let mut bad = s.clone();
            bad[i] ^= 1;
            assert!(c.open(Ad::Index, bad).is_err(), "flip at {i}");
        }
        assert!(c.open(Ad::Index, vec![0; OVERHEAD - 1]).is_err());
        // Two seals of one message differ (random nonces).
        assert_ne!(s, c.seal(Ad::Index, &[b"hello world"]).unwrap());
        let v = c.seal_vec(Ad::Blob, b"owned".to_vec()).unwrap();
        assert_eq!(v.len(), 5 + OVERHEAD);
        assert_eq!(c.open(Ad::Blob, v).unwrap(), b"owned");
        assert_eq!(
            Crypto::plain().seal_vec(Ad::Blob, b"o".to_vec()).unwrap(),
            b"o"
        );
        let nonces: std::collections::HashSet<Vec<u8>> =
            (0..1000).map(|_| c.seal(Ad::Blob, &[]).unwrap()).collect();
        assert_eq!(nonces.len(), 1000, "every seal draws a new nonce");
        // Plain passes bytes through; ids are keyed only when sealed.
        let p = Crypto::plain();
        assert_eq!(p.seal(Ad::Blob, &[b"ab", b"c"]).unwrap(), b"abc");
        assert_eq!(p.id(b"abc"), blake3::hash(b"abc"));
        assert_ne!(c.id(b"abc"), blake3::hash(b"abc"));
        let mut h = c.hasher();
        h.update(b"ab");
        h.update(b"c");
        assert_eq!(h.finalize(), c.id(b"abc"));
    }

    #[test]
    fn a_wrapped_key_unwraps_with_its_password_only() {
        let k = MasterKey::generate().unwrap();
        let (salt, sealed) = wrap(&k, b"correct horse", FAST).unwrap();
        let got = unwrap(&sealed, b"correct horse", &salt, FAST)
            .unwrap()
            .unwrap();
        assert_eq!(got.as_bytes(), k.as_bytes());
        assert!(unwrap(&sealed, b"wrong", &salt, FAST).unwrap().is_none());
        let other = KdfParams { t_cost: 2, ..FAST };
        assert!(unwrap(&sealed, b"correct horse", &salt, other)
            .unwrap()
            .is_none());
        let huge = KdfParams {
            m_cost: KdfParams::M_COST_MAX + 1,
            ..FAST
        };
        assert!(derive(b"x", &salt, huge).unwrap_err().contains("over"));
    }
}
