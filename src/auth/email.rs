//! Email addresses as accounts know them: trimmed, lower-cased, syntactically valid.

use email_address::{EmailAddress, Options};

use crate::error::FieldError;

const MAX_LEN: usize = 254;

/// The one spelling of an address pipepay stores and compares. Lower-casing the local part is
/// technically lossy, but no real mailbox provider distinguishes case, and people do not
/// remember which case they signed up with.
pub fn normalise(field: &str, raw: &str) -> Result<String, FieldError> {
    let fail = |message: &str| FieldError { field: field.to_owned(), message: message.to_owned() };
    let email = raw.trim().to_lowercase();
    if email.is_empty() {
        return Err(fail("Enter an email address."));
    }
    if email.len() > MAX_LEN {
        return Err(fail("Enter an email address of at most 254 characters."));
    }
    let options = Options::default().with_required_tld().without_domain_literal();
    EmailAddress::parse_with_options(&email, Options { allow_display_text: false, ..options })
        .map_err(|_| fail("Enter an email address like name@example.com."))?;
    Ok(email)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_refuses() {
        assert_eq!(normalise("email", "  Ada@Acme.Africa ").unwrap(), "ada@acme.africa");
        for bad in ["", "ada", "ada@", "@acme.africa", "ada@localhost", "Ada <ada@acme.africa>"] {
            assert!(normalise("email", bad).is_err(), "{bad}");
        }
    }
}
