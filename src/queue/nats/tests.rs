use super::*;

#[test]
fn keys_become_single_safe_subject_tokens() {
    let hex = "a".repeat(64);
    assert_eq!(subject_token(&hex), hex);
    for hostile in ["a.b", "*", ">", "a b", ""] {
        let token = subject_token(hostile);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !token.is_empty(),
            "{hostile:?} -> {token:?}"
        );
    }
    assert_ne!(subject_token("a.b"), subject_token("a_b"));
}
