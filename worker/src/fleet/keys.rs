//! Names of the keys the fleet keeps in Redis. Each name is one hash tag as a whole
//! (`{…}`), so a script touching one key touches one slot of a cluster; client identities are
//! hashed (SHA-256), so keys have a bounded length, carry no identity in clear, and no brace
//! in an identity can move the hash tag.

/// Prefix of every key this service writes.
const PREFIX: &str = "awswl";

/// The rate-limit bucket of `client` in the limiter named `limiter` (`req`, `auth`).
pub fn rate_limit(limiter: &str, client: &str) -> String {
    format!("{{{PREFIX}:rl:{limiter}:{}}}", hashed(client))
}

/// The fleet's change counter of a security group (cache freshness).
pub fn change_counter(group: &str) -> String {
    format!("{{{PREFIX}:cv:{}}}", hashed(group))
}

/// 128 bits of SHA-256, in hex.
fn hashed(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hash_tag_per_key_whatever_the_client() {
        let k = rate_limit("req", "sub:{evil}x");
        assert!(k.starts_with("{awswl:rl:req:") && k.ends_with('}'));
        assert_eq!(k.matches('{').count(), 1);
        assert_eq!(k.matches('}').count(), 1);
        assert_ne!(rate_limit("req", "a"), rate_limit("req", "b"));
        assert_ne!(rate_limit("req", "a"), rate_limit("auth", "a"));
        assert_eq!(rate_limit("req", "a"), rate_limit("req", "a"));
        let c = change_counter("sg-1");
        assert!(c.starts_with("{awswl:cv:") && c.ends_with('}') && c.matches('{').count() == 1);
    }
}
