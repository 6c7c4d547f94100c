//! Certificates made on the spot: a CA of a test's own and what it signs.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A CA of a test's own and the PEM files made with it, removed on drop.
pub struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("slotgate-pki-{name}-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { dir, ca }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A certificate and key signed by this CA, as PEM strings.
    pub fn leaf(&self, name: &str, purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A certificate naming `names` (host names, or IP addresses) and its
    /// key, written as `{stem}.crt` and `{stem}.key`; the first name is its
    /// common name (a PostgreSQL client certificate's user).
    pub fn issue(&self, stem: &str, names: &[&str], purposes: &[ExtendedKeyUsagePurpose]) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        for name in names {
            params.subject_alt_names.push(match name.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*name).try_into().unwrap()),
            });
        }
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = purposes.to_vec();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (self.write(&format!("{stem}.crt"), &cert.pem()), self.write(&format!("{stem}.key"), &key.serialize_pem()))
    }

    /// The CA's certificate, written as `ca.crt`.
    pub fn ca_file(&self) -> PathBuf {
        self.write("ca.crt", &self.ca_pem())
    }

    pub fn write(&self, file: &str, pem: &str) -> PathBuf {
        let path = self.dir.join(file);
        std::fs::write(&path, pem).unwrap();
        path
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0u8)
}
