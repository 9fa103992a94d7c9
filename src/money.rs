//! Amounts as a currency is charged and read: its number of decimals (ISO 4217 minor units),
//! rounding to them, and the one way pipepay writes an amount, in notes, on the timeline, on
//! pages and to Flutterwave.
//!
//! Writing is plain: `1075.00`, no thousands separator. The same text then reads the same in the
//! note, on the Flutterwave dashboard and in the body Flutterwave was sent, and a separator
//! would mislead half of Kommo's users: in Spanish and Portuguese `1,075` is one and a bit.

use std::fmt;

use rust_decimal::{Decimal, RoundingStrategy};

/// An amount in a currency: what a link asks for, or what a payment paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    pub amount: Decimal,
    /// ISO 4217, upper case.
    pub currency: String,
}

impl Money {
    pub fn new(amount: Decimal, currency: impl Into<String>) -> Money {
        Money { amount, currency: currency.into() }
    }

    /// The amount as pipepay writes it (see [`format`]), without the currency.
    pub fn amount_text(&self) -> String {
        format(&self.currency, self.amount)
    }
}

/// `1075.00 KES`: the amount as pipepay writes it, then the currency.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount_text(), self.currency)
    }
}

/// ISO 4217 currencies without minor units. Of those Flutterwave takes: CLP, GNF, RWF, UGX, XAF,
/// XOF; the rest are here so that an amount reported in one is never shown with cents.
const NO_DECIMALS: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV", "XAF",
    "XOF", "XPF",
];

/// ISO 4217 currencies with three decimals (none of them is one Flutterwave takes today).
const THREE_DECIMALS: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];

/// How many decimals the currency is charged in; 2 for any code not listed as otherwise.
pub fn decimals(currency: &str) -> u32 {
    if NO_DECIMALS.contains(&currency) {
        0
    } else if THREE_DECIMALS.contains(&currency) {
        3
    } else {
        2
    }
}

/// The amount rounded to what the currency can be charged in, half away from zero: a price plus
/// 7.5% tax that lands on half a cent rounds up, as the tax on a printed invoice does. Banker's
/// rounding would make the same price charge a cent less on some amounts than the customer's own
/// arithmetic says, for no gain on a single charge.
pub fn round(currency: &str, amount: Decimal) -> Decimal {
    amount.round_dp_with_strategy(decimals(currency), RoundingStrategy::MidpointAwayFromZero)
}

/// The amount as pipepay writes it: the currency's decimals (`1075.00`, `1500000` UGX), and
/// more only when the amount really has them. Nothing is rounded away here: an amount someone
/// else reported (what Flutterwave says was paid) is shown as it is.
pub fn format(currency: &str, amount: Decimal) -> String {
    let mut shown = amount.normalize();
    let places = decimals(currency);
    if shown.scale() < places {
        shown.rescale(places);
    }
    shown.to_string()
}

/// Whether the amount can be charged as it is, without rounding.
pub fn fits(currency: &str, amount: Decimal) -> bool {
    amount.normalize().scale() <= decimals(currency)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    #[test]
    fn a_price_with_tax_is_written_with_the_currencys_decimals() {
        let taxed = dec("1000") + dec("1000") * dec("7.5") / Decimal::ONE_HUNDRED;
        assert_eq!(taxed.to_string(), "1075.0", "what the issue saw");
        assert_eq!(format("KES", round("KES", taxed)), "1075.00");
        assert_eq!(format("NGN", dec("1075")), "1075.00");
        assert_eq!(format("USD", dec("0.5")), "0.50");
        assert_eq!(format("UGX", round("UGX", dec("1500000.0"))), "1500000");
        assert_eq!(format("XOF", dec("2500.00")), "2500");
        assert_eq!(format("KWD", dec("12.5")), "12.500");
        assert_eq!(format("KES", dec("1234567.89")), "1234567.89", "no thousands separator");
    }

    #[test]
    fn rounding_is_half_away_from_zero_to_the_currencys_decimals() {
        assert_eq!(round("KES", dec("10.005")), dec("10.01"));
        assert_eq!(round("KES", dec("10.025")), dec("10.03"), "not to even");
        assert_eq!(round("KES", dec("10.0049")), dec("10.00"));
        assert_eq!(round("UGX", dec("1074.5")), dec("1075"));
        assert_eq!(round("RWF", dec("1074.49")), dec("1074"));
        // 333.33 at 7.5% is 358.33225: a fraction of a cent is dropped, never charged.
        assert_eq!(round("NGN", dec("333.33") * dec("1.075")), dec("358.33"));
    }

    #[test]
    fn an_amount_reported_with_more_decimals_is_not_rounded_when_shown() {
        assert_eq!(format("KES", dec("1075.005")), "1075.005");
        assert_eq!(format("UGX", dec("1075.5")), "1075.5");
        assert!(!fits("UGX", dec("1075.5")) && fits("UGX", dec("1075.000")) && fits("KES", dec("0.01")));
    }

    #[test]
    fn money_is_written_amount_then_currency_and_compares_by_value() {
        let price = Money::new(dec("1075.0"), "KES");
        assert_eq!(price.to_string(), "1075.00 KES");
        assert_eq!(price, Money::new(dec("1075.00"), "KES"), "1075.0 is 1075.00");
        assert_ne!(price, Money::new(dec("1075"), "NGN"));
    }
}
