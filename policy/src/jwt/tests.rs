//! Operator tokens: every refusal, one test each, and a good token accepted.

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};

use super::*;

const NOW: u64 = 1_800_000_000;

struct Authority {
    pkcs8: Vec<u8>,
    key: TokenKey,
}

fn authority() -> Authority {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
        .expect("key")
        .as_ref()
        .to_vec();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &pkcs8, &rng)
        .expect("parse key");
    let public = pair.public_key().as_ref().to_vec();
    Authority {
        key: TokenKey {
            kid: key_id(&public),
            public,
        },
        pkcs8,
    }
}

const CERT: &[u8] = b"the DER of the operator's client certificate";
const OTHER_CERT: &[u8] = b"the DER of somebody else's certificate";

fn claims() -> OperatorClaims {
    OperatorClaims {
        iss: org_uri("acme"),
        aud: org_uri("acme"),
        sub: "alice".into(),
        role: "admin".into(),
        iat: NOW - 60,
        nbf: NOW - 60,
        exp: NOW + 3600,
        jti: "t-1".into(),
        cnf: Some(Confirmation {
            x5t_s256: thumbprint(CERT),
        }),
    }
}

fn check(a: &Authority, token: &str) -> Result<OperatorClaims, TokenError> {
    check_with(a, token, CERT, &[])
}

fn check_with(
    a: &Authority,
    token: &str,
    cert: &[u8],
    revoked: &[String],
) -> Result<OperatorClaims, TokenError> {
    verify(
        token,
        &Expect {
            org: "acme",
            keys: std::slice::from_ref(&a.key),
            revoked,
            client_cert: cert,
            now: NOW,
        },
    )
}

fn signed(a: &Authority, c: &OperatorClaims) -> String {
    issue(&a.pkcs8, &a.key.kid, c).expect("sign")
}

#[test]
fn a_good_token_is_accepted() {
    let a = authority();
    let got = check(&a, &signed(&a, &claims())).expect("accepted");
    assert_eq!(got, claims());
}

#[test]
fn a_forged_token_is_refused() {
    let a = authority();
    let forger = authority();
    // Signed by another key under the authority's kid.
    let forged = issue(&forger.pkcs8, &a.key.kid, &claims()).expect("sign");
    assert_eq!(check(&a, &forged), Err(TokenError::Signature));
    // A changed claim breaks the signature.
    let token = signed(&a, &claims());
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut promoted = claims();
    promoted.role = "superuser".into();
    parts[1] = b64url(&serde_json::to_vec(&promoted).expect("json"));
    assert_eq!(check(&a, &parts.join(".")), Err(TokenError::Signature));
    // An unknown kid.
    let unknown = issue(&a.pkcs8, "0000", &claims()).expect("sign");
    assert!(matches!(
        check(&a, &unknown),
        Err(TokenError::UnknownKey(_))
    ));
}

#[test]
fn alg_none_hmac_and_rsa_confusion_are_refused() {
    let a = authority();
    let body = b64url(&serde_json::to_vec(&claims()).expect("json"));
    let none = format!("{}.{body}.", b64url(br#"{"alg":"none","typ":"JWT"}"#));
    assert!(check(&a, &none).is_err());
    // HMAC keyed with the public key (the classic confusion).
    let mut header = Header::new(Algorithm::HS384);
    header.kid = Some(a.key.kid.clone());
    let hs = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&a.key.public))
        .expect("sign");
    assert_eq!(check(&a, &hs), Err(TokenError::Algorithm("HS384".into())));
    // An RS256 header over an ES384 signature.
    let es = signed(&a, &claims());
    let sig = es.rsplit('.').next().unwrap_or_default();
    let rs_header = b64url(format!(r#"{{"alg":"RS256","kid":"{}"}}"#, a.key.kid).as_bytes());
    let rs = format!("{rs_header}.{body}.{sig}");
    assert_eq!(check(&a, &rs), Err(TokenError::Algorithm("RS256".into())));
    assert!(matches!(
        check(&a, "not a token"),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn wrong_issuer_or_audience_is_refused() {
    let a = authority();
    let mut c = claims();
    c.aud = org_uri("globex");
    assert!(matches!(
        check(&a, &signed(&a, &c)),
        Err(TokenError::Audience(_))
    ));
    let mut c = claims();
    c.iss = org_uri("globex");
    assert!(matches!(
        check(&a, &signed(&a, &c)),
        Err(TokenError::Issuer(_))
    ));
}

#[test]
fn expiry_and_not_before_hold_within_the_leeway() {
    let a = authority();
    let mut c = claims();
    c.exp = NOW - LEEWAY_SECS;
    assert_eq!(check(&a, &signed(&a, &c)), Err(TokenError::Expired(c.exp)));
    c.exp = NOW - LEEWAY_SECS + 1;
    assert!(check(&a, &signed(&a, &c)).is_ok(), "inside the leeway");
    let mut c = claims();
    c.nbf = NOW + LEEWAY_SECS + 1;
    assert!(matches!(
        check(&a, &signed(&a, &c)),
        Err(TokenError::NotYetValid(_))
    ));
    let mut c = claims();
    c.iat = NOW + 3600;
    assert!(matches!(
        check(&a, &signed(&a, &c)),
        Err(TokenError::NotYetValid(_))
    ));
}

#[test]
fn a_revoked_token_is_refused() {
    let a = authority();
    let token = signed(&a, &claims());
    let revoked = vec!["t-0".to_owned(), "t-1".to_owned()];
    assert_eq!(
        check_with(&a, &token, CERT, &revoked),
        Err(TokenError::Revoked("t-1".into()))
    );
}

#[test]
fn an_unbound_token_or_one_replayed_from_another_certificate_is_refused() {
    let a = authority();
    let mut c = claims();
    c.cnf = None;
    assert_eq!(check(&a, &signed(&a, &c)), Err(TokenError::Unbound));
    let token = signed(&a, &claims());
    assert_eq!(
        check_with(&a, &token, OTHER_CERT, &[]),
        Err(TokenError::WrongCertificate)
    );
}

#[test]
fn base64url_matches_the_rfc_4648_vectors() {
    for (raw, want) in [
        (&b""[..], ""),
        (b"f", "Zg"),
        (b"fo", "Zm8"),
        (b"foo", "Zm9v"),
        (b"foob", "Zm9vYg"),
        (b"fooba", "Zm9vYmE"),
        (b"foobar", "Zm9vYmFy"),
        (&[0xfb, 0xff], "-_8"),
    ] {
        assert_eq!(b64url(raw), want);
    }
}
