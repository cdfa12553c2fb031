//! The ids a call names its target by: a security group (`sg-…`) or a managed prefix list
//! (`pl-…`), and what a prefix-list target makes of the `port` and `protocol` arguments.

use super::error::Error;
use super::target::{Ports, Protocol};

/// True when `id` names a managed prefix list rather than a security group.
pub fn is_prefix_list(id: &str) -> bool {
    id.starts_with("pl-")
}

/// Security group ids (`sg-`) and managed prefix list ids (`pl-`): 8 or 17 lower-case hex
/// digits after the prefix.
pub fn check_group_id(group: &str) -> Result<String, Error> {
    let g = group.trim();
    let hex = |h: &str| {
        (h.len() == 8 || h.len() == 17) && h.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    };
    if ["sg-", "pl-"].iter().any(|p| g.strip_prefix(p).is_some_and(hex)) {
        return Ok(g.to_string());
    }
    Err(Error::Invalid {
        field: "security_group_id",
        message: format!(
            "{group:?} is not a security group id (sg- followed by 8 or 17 lower-case hex digits) \
             nor a managed prefix list id (pl- followed by the same)"
        ),
    })
}

/// What an entry of the prefix list `list` opens: no protocol and no port of its own (the
/// rules of the security groups that reference the list decide them), so it is held as
/// protocol `all`, ports `all`. A `port` or `protocol` argument is refused rather than ignored:
/// the caller would believe it opened only that port.
pub fn entry_target(
    list: &str,
    port: Option<&str>,
    protocol: Option<&str>,
) -> Result<(Protocol, Ports), Error> {
    let given = |v: Option<&str>| v.map(str::trim).is_some_and(|v| !v.is_empty() && v != "all" && v != "-1");
    let field = match (given(port), given(protocol)) {
        (true, _) => "port",
        (false, true) => "protocol",
        (false, false) => return Ok((Protocol::All, Ports::ANY)),
    };
    Err(Error::Invalid {
        field,
        message: format!(
            "{list} is a managed prefix list: its entries have no {field}; the rules of the security groups \
             that reference {list} decide protocol and ports; leave port and protocol out"
        ),
    })
}
