//! A node certificate says who its holder is: the name and region written
//! at issue are read back from the certificate alone.

use geocache_gossip::certs::{Ca, CertIdentity};

#[test]
fn name_and_region_round_trip_through_the_certificate() {
    let ca = Ca::generate("geocache test CA").unwrap();
    let cert = ca.issue_in("node-1", Some("são paulo/1 %")).unwrap();
    let id = CertIdentity::of_pem(&cert.cert_pem).unwrap();
    assert_eq!(id, CertIdentity { name: "node-1".into(), region: Some("são paulo/1 %".into()) });
    let plain = ca.issue("node-2").unwrap();
    assert_eq!(CertIdentity::of_pem(&plain.cert_pem).unwrap().region, None);
    assert!(CertIdentity::of_pem(ca.cert_pem()).is_ok(), "a CA has a name too, but no region");
    assert!(CertIdentity::of_der(b"garbage").is_err());
}
