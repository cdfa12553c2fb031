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

/// The sweeper's lease (holder token and fence) and its fencing counter: two keys under one
/// hash tag, so the scripts that read both touch one slot.
pub fn sweeper_lease() -> [String; 2] {
    [format!("{{{PREFIX}:sweeper}}:lease"), format!("{{{PREFIX}:sweeper}}:fence")]
}

/// The fleet's expiry index: a set of the targets (JSON) any host gave an expiring rule.
pub fn expiry_index() -> String {
    format!("{{{PREFIX}:expiring}}")
}

/// The record that the consent state with `nonce` was used.
pub fn consent_nonce(nonce: &str) -> String {
    format!("{{{PREFIX}:cn:{}}}", hashed(nonce))
}

/// The fleet-wide lock of a security group (count and add under `max_rules_per_group`).
pub fn group_lock(group: &str) -> String {
    format!("{{{PREFIX}:gl:{}}}", hashed(group))
}

/// The lead of the fleet's single flight for reads of cache key `key`.
pub fn read_lead(key: &str) -> String {
    format!("{{{PREFIX}:rdl:{}}}", hashed(key))
}

/// The read the last leader of cache key `key` stored for the fleet.
pub fn shared_read(key: &str) -> String {
    format!("{{{PREFIX}:rd:{}}}", hashed(key))
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
        let [lease, fence] = sweeper_lease();
        assert_eq!(slot_tag(&lease), slot_tag(&fence), "one slot for the lease script");
        let all = [group_lock("sg-1"), read_lead("k"), shared_read("k"), consent_nonce("n"), expiry_index()];
        for k in &all {
            assert_eq!(k.matches('{').count(), 1, "{k}");
        }
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len());
    }

    /// What Redis Cluster hashes: the text between the first `{` and the next `}`.
    fn slot_tag(key: &str) -> &str {
        let open = key.find('{').unwrap();
        let close = open + key[open..].find('}').unwrap();
        &key[open + 1..close]
    }
}
