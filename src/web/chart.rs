//! Payments per day as a server-rendered SVG bar chart, one per currency. Totals stay exact
//! decimals; only the bar heights are rounded, to whole pixels.

use chrono::{Days, NaiveDate};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};

use crate::tenants::activity::DayTotal;

const BAR: i64 = 16;
const STEP: i64 = 20;
const LEFT: i64 = 8;
const TOP: i64 = 10;
const PLOT: i64 = 120;
const LABELS: i64 = 24;

#[derive(Debug, Clone)]
pub struct Bar {
    pub x: i64,
    pub y: i64,
    pub width: i64,
    pub height: i64,
    /// The bar's tooltip: day, exact total, payments.
    pub label: String,
}

#[derive(Debug, Clone)]
pub struct Tick {
    pub x: i64,
    pub text: String,
}

/// One day's exact figures, for the table beside the chart.
#[derive(Debug, Clone)]
pub struct Row {
    pub day: String,
    pub total: String,
    pub payments: usize,
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub currency: String,
    pub width: i64,
    pub height: i64,
    /// The x axis' height.
    pub base: i64,
    pub title: String,
    pub desc: String,
    pub bars: Vec<Bar>,
    pub ticks: Vec<Tick>,
    pub rows: Vec<Row>,
    pub total: String,
    pub payments: usize,
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Whole pixels for `total` on a scale where `max` fills the plot; a payment never vanishes.
fn height(total: Decimal, max: Decimal) -> i64 {
    if max <= Decimal::ZERO || total <= Decimal::ZERO {
        return 0;
    }
    let pixels = (total * Decimal::from(PLOT) / max)
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        .to_i64()
        .unwrap_or(PLOT);
    pixels.clamp(1, PLOT)
}

/// A chart per currency of `days` days starting at `first` (UTC); currencies in code order.
pub fn per_currency(first: NaiveDate, days: u64, totals: &[DayTotal]) -> Vec<Chart> {
    let mut currencies: Vec<&str> = totals.iter().map(|t| t.currency.as_str()).collect();
    currencies.sort_unstable();
    currencies.dedup();
    let last = first.checked_add_days(Days::new(days.saturating_sub(1))).unwrap_or(first);
    let count = i64::try_from(days).unwrap_or(0);
    let width = LEFT * 2 + STEP * count;
    let ticks: Vec<Tick> = (0..days)
        .step_by(7)
        .filter_map(|i| {
            let day = first.checked_add_days(Days::new(i))?;
            let x = LEFT + STEP * i64::try_from(i).ok()? + BAR / 2;
            Some(Tick { x, text: day.format("%b %-d").to_string() })
        })
        .collect();
    currencies
        .into_iter()
        .map(|currency| {
            let mine: Vec<&DayTotal> =
                totals.iter().filter(|t| t.currency == currency && t.day >= first && t.day <= last).collect();
            let max = mine.iter().map(|t| t.total).max().unwrap_or(Decimal::ZERO);
            let total: Decimal = mine.iter().map(|t| t.total).sum();
            let payments: usize = mine.iter().map(|t| t.payments).sum();
            let bars = mine
                .iter()
                .filter_map(|t| {
                    let index = (t.day - first).num_days();
                    let h = height(t.total, max);
                    Some(Bar {
                        x: LEFT + STEP * index,
                        y: TOP + PLOT - h,
                        width: BAR,
                        height: h,
                        label: format!(
                            "{}: {} {currency} ({} payment{})",
                            t.day,
                            super::view::amount_of(currency, t.total),
                            t.payments,
                            plural(t.payments)
                        ),
                    })
                    .filter(|b| b.height > 0)
                })
                .collect();
            let rows = mine
                .iter()
                .map(|t| Row {
                    day: t.day.to_string(),
                    total: super::view::amount_of(currency, t.total),
                    payments: t.payments,
                })
                .collect();
            Chart {
                currency: currency.to_owned(),
                width,
                height: TOP + PLOT + LABELS,
                base: TOP + PLOT,
                title: format!("Payments per day in {currency}, {first} to {last} (UTC)"),
                desc: format!(
                    "{} {currency} from {payments} payment{} in {} day{} with payments; the highest day was \
                     {} {currency}.",
                    super::view::amount_of(currency, total),
                    plural(payments),
                    mine.len(),
                    plural(mine.len()),
                    super::view::amount_of(currency, max),
                ),
                bars,
                ticks: ticks.clone(),
                rows,
                total: super::view::amount_of(currency, total),
                payments,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 5, d).unwrap()
    }

    #[test]
    fn totals_stay_exact_and_bars_are_whole_pixels() {
        let totals = vec![
            DayTotal { day: day(2), currency: "KES".into(), total: "1245.00".parse().unwrap(), payments: 2 },
            DayTotal { day: day(3), currency: "KES".into(), total: "0.01".parse().unwrap(), payments: 1 },
            DayTotal { day: day(3), currency: "NGN".into(), total: "500".parse().unwrap(), payments: 1 },
        ];
        let charts = per_currency(day(1), 30, &totals);
        assert_eq!(charts.len(), 2);
        let kes = &charts[0];
        assert_eq!(kes.currency, "KES");
        assert_eq!(kes.total, "1,245.01");
        assert_eq!(kes.payments, 3);
        assert_eq!(kes.bars[0].height, PLOT, "the highest day fills the plot");
        assert_eq!(kes.bars[1].height, 1, "a tiny payment stays visible");
        assert_eq!(kes.bars[0].x, LEFT + STEP);
        assert!(kes.bars[0].label.contains("1,245.00 KES (2 payments)"));
        assert_eq!(kes.rows[0].total, "1,245.00");
        assert_eq!(charts[1].total, "500.00", "with the currency's decimals");
    }

    #[test]
    fn a_half_pixel_rounds_away_from_zero() {
        assert_eq!(height(Decimal::new(1, 0), Decimal::new(240, 0)), 1);
        assert_eq!(height(Decimal::new(5, 0), Decimal::new(240, 0)), 3);
    }
}
