//! The AWS side of [`crate::whitelist::receipts`]: every change call (and dry run) notes the
//! request id AWS answered it with (`x-amzn-requestid`, on successes and failures alike) and
//! the account of the session that made it.

use aws_sdk_ec2::operation::RequestId;

use super::clients::Session;
use crate::whitelist::receipts;

/// Notes `answer`'s request id and `s`'s account for the change being made; returns `answer`.
pub(super) fn noted<R: RequestId>(s: &Session, answer: R) -> R {
    receipts::note(s.account.as_deref(), answer.request_id());
    answer
}
