//! The printable HTML report of a file-mode run: one self-contained file
//! (inline CSS, inline SVG, no scripts, no external assets) with the totals,
//! the match rate by stage, a chart of matched and open amounts, the aging
//! of unmatched receipts and open invoices, and the suggestions with their
//! reasons. Every piece of text from the input is HTML-escaped.

use std::collections::BTreeMap;
use std::fmt::Write;

use rust_decimal::Decimal;

use super::file::{Aging, FileResult, Tally};

/// Where the run's input came from, for the report's header.
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    /// Receivables file.
    pub receivables: &'a str,
    /// Statement file.
    pub statement: &'a str,
}

/// Rows listed per table before "… and N more"; the full lists are in
/// result.json.
pub const MAX_ROWS: usize = 500;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A decimal string with thousands separators: `1234567.5` → `1,234,567.5`.
/// Text that is not a plain decimal is returned as it is.
pub fn group(amount: &str) -> String {
    let (sign, rest) = match amount.strip_prefix('-') {
        Some(r) => ("-", r),
        None => ("", amount),
    };
    let (int, frac) = match rest.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (rest, None),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return amount.to_owned();
    }
    let mut grouped = String::with_capacity(int.len() + int.len() / 3);
    for (k, ch) in int.chars().enumerate() {
        if k > 0 && (int.len() - k) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

fn amounts_html(t: &Tally) -> String {
    if t.amount.is_empty() {
        return "&ndash;".into();
    }
    t.amount
        .iter()
        .map(|(c, a)| format!("{}&nbsp;{}", escape(&group(a)), escape(c)))
        .collect::<Vec<_>>()
        .join("<br>")
}

fn pct(part: usize, whole: usize) -> String {
    if whole == 0 {
        "&ndash;".into()
    } else {
        format!("{:.1}&nbsp;%", part as f64 * 100.0 / whole as f64)
    }
}

const CSS: &str = "
body{font:13px/1.4 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#222;margin:24px;max-width:1100px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:22px 0 6px;border-bottom:1px solid #999}
.meta{color:#555;margin-bottom:10px}
table{border-collapse:collapse;margin:4px 0 8px;width:100%}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#eee}td.n,th.n{text-align:right;white-space:nowrap}
.auto{color:#1a6b2a}.suggested{color:#8a5a00}.open{color:#9b1c1c}
ul.r{margin:0;padding-left:16px}
.more{color:#555;font-style:italic}
svg text{font:11px sans-serif}
@media print{body{margin:0}h2{break-after:avoid}tr{break-inside:avoid}}
";

/// Renders the report.
pub fn html(result: &FileResult, meta: &Meta<'_>) -> String {
    let s = &result.summary;
    let mut o = String::with_capacity(64 * 1024);
    o.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    o.push_str("<title>Reconciliation report</title><style>");
    o.push_str(CSS);
    o.push_str("</style></head><body>\n<h1>Reconciliation report</h1>\n");
    let _ = writeln!(
        o,
        "<div class=\"meta\">Receivables: {}<br>Statement: {}<br>As of {} (last booking day); auto threshold {}, suggestion threshold {}, fee tolerance {} % of the open amount</div>",
        escape(meta.receivables),
        escape(meta.statement),
        s.as_of.map_or("&ndash;".to_owned(), |d| d.to_string()),
        s.parameters.auto_threshold,
        s.parameters.suggest_threshold,
        escape(
            &(s.parameters
                .tolerance_relative
                .parse::<Decimal>()
                .unwrap_or_default()
                * Decimal::ONE_HUNDRED)
                .normalize()
                .to_string()
        ),
    );

    // Totals.
    o.push_str("<h2>Totals</h2>\n<table><tr><th></th><th class=\"n\">count</th><th class=\"n\">share</th><th class=\"n\">amount</th></tr>\n");
    let n = s.receipts.count;
    for (label, class, t) in [
        ("Receipts read", "", &s.receipts),
        ("Matched automatically", "auto", &s.auto),
        ("Suggested for review", "suggested", &s.suggested),
        ("Left open", "open", &s.open),
    ] {
        let _ = writeln!(
            o,
            "<tr class=\"{class}\"><td>{label}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            t.count,
            pct(t.count, n),
            amounts_html(t)
        );
    }
    for (label, t) in [
        ("Open invoices before the run", &s.invoices),
        (
            "Open invoices after automatic matches",
            &s.invoices_remaining,
        ),
        ("Write-offs suggested (fees, FX)", &s.write_offs),
        ("Overpayments left unallocated", &s.unallocated),
    ] {
        let _ = writeln!(
            o,
            "<tr><td>{label}</td><td class=\"n\">{}</td><td class=\"n\"></td><td class=\"n\">{}</td></tr>",
            t.count,
            amounts_html(t)
        );
    }
    o.push_str("</table>\n");
    if !s.auto_amount_rate.is_empty() {
        o.push_str("<div>Share of the amount received allocated automatically: ");
        let parts: Vec<String> = s
            .auto_amount_rate
            .iter()
            .map(|(c, r)| format!("{} {:.1}&nbsp;%", escape(c), r * 100.0))
            .collect();
        o.push_str(&parts.join(", "));
        o.push_str("</div>\n");
    }

    // By stage.
    o.push_str("<h2>Match rate by stage</h2>\n<table><tr><th>stage</th><th class=\"n\">auto</th><th class=\"n\">suggested</th><th class=\"n\">auto, share of receipts</th><th class=\"n\">amount matched automatically</th></tr>\n");
    for (name, st) in &s.by_stage {
        if st.auto + st.suggested == 0 {
            continue;
        }
        let amount = if st.auto_amount.is_empty() {
            "&ndash;".to_owned()
        } else {
            st.auto_amount
                .iter()
                .map(|(c, a)| format!("{}&nbsp;{}", escape(&group(a)), escape(c)))
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{amount}</td></tr>",
            escape(&name.replace('_', " ")),
            st.auto,
            st.suggested,
            pct(st.auto, n)
        );
    }
    let _ = writeln!(
        o,
        "<tr><td><b>all stages</b></td><td class=\"n\"><b>{}</b></td><td class=\"n\"><b>{}</b></td><td class=\"n\"><b>{}</b></td><td></td></tr>\n</table>",
        s.auto.count,
        s.suggested.count,
        pct(s.auto.count, n)
    );

    // Chart.
    o.push_str("<h2>Matched and open amounts</h2>\n");
    o.push_str(&chart(result));

    // Aging.
    o.push_str("<h2>Aging</h2>\n");
    o.push_str(&aging_table(
        "Unmatched receipts (days since booking)",
        &s.aging_receipts,
        false,
    ));
    o.push_str(&aging_table(
        "Open invoices after automatic matches (days past due)",
        &s.aging_invoices,
        true,
    ));

    // Suggestions.
    let suggestions: Vec<_> = result
        .matches
        .iter()
        .filter(|m| m.status == super::Status::Suggested)
        .collect();
    let _ = writeln!(o, "<h2>Suggestions to review ({})</h2>", suggestions.len());
    if suggestions.is_empty() {
        o.push_str("<p>None.</p>\n");
    } else {
        o.push_str("<table><tr><th>transaction</th><th>booked</th><th class=\"n\">amount</th><th>payer</th><th class=\"n\">confidence</th><th>stage</th><th>invoices</th><th>reasons</th></tr>\n");
        for m in suggestions.iter().take(MAX_ROWS) {
            let invoices: Vec<String> = m
                .allocations
                .iter()
                .map(|a| {
                    format!(
                        "{} ({})&nbsp;{}",
                        escape(&a.invoice_number),
                        escape(&a.customer_id),
                        escape(&group(&a.amount))
                    )
                })
                .collect();
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}&nbsp;{}</td><td>{}</td><td class=\"n\">{:.2}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&m.transaction_id),
                m.booking_date,
                escape(&group(&m.amount)),
                escape(m.currency.as_str()),
                escape(m.counterparty_name.as_deref().unwrap_or("")),
                m.confidence,
                escape(m.stage.as_str()),
                invoices.join("<br>"),
                reasons_html(&m.reasons)
            );
        }
        more(&mut o, suggestions.len(), 8);
        o.push_str("</table>\n");
    }

    // Open receipts.
    let _ = writeln!(
        o,
        "<h2>Receipts left open ({})</h2>",
        result.unmatched_transactions.len()
    );
    if result.unmatched_transactions.is_empty() {
        o.push_str("<p>None.</p>\n");
    } else {
        o.push_str("<table><tr><th>transaction</th><th>booked</th><th class=\"n\">amount</th><th>payer</th><th>reference</th><th class=\"n\">age</th><th>why open</th></tr>\n");
        for t in result.unmatched_transactions.iter().take(MAX_ROWS) {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}&nbsp;{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                escape(&t.transaction_id),
                t.booking_date,
                escape(&group(&t.amount)),
                escape(t.currency.as_str()),
                escape(t.counterparty_name.as_deref().unwrap_or("")),
                escape(t.reference.as_deref().unwrap_or("")),
                t.age_days,
                reasons_html(&t.reasons)
            );
        }
        more(&mut o, result.unmatched_transactions.len(), 7);
        o.push_str("</table>\n");
    }

    // Alerts.
    let _ = writeln!(o, "<h2>Alerts ({})</h2>", result.alerts.len());
    if result.alerts.is_empty() {
        o.push_str("<p>None.</p>\n");
    } else {
        o.push_str(
            "<table><tr><th>severity</th><th>rule</th><th>where</th><th>problem</th></tr>\n",
        );
        for a in result.alerts.iter().take(MAX_ROWS) {
            let mut place = a.file.clone().unwrap_or_default();
            if let Some(l) = a.line {
                let _ = write!(place, ":{l}");
            }
            if let Some(p) = &a.place {
                let _ = write!(place, " ({p})");
            }
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                a.severity.as_str(),
                escape(a.rule),
                escape(&place),
                escape(&a.message)
            );
        }
        more(&mut o, result.alerts.len(), 4);
        o.push_str("</table>\n");
    }
    o.push_str("</body></html>\n");
    o
}

fn more(o: &mut String, len: usize, cols: usize) {
    if len > MAX_ROWS {
        let _ = writeln!(
            o,
            "<tr><td class=\"more\" colspan=\"{cols}\">… and {} more in result.json</td></tr>",
            len - MAX_ROWS
        );
    }
}

fn reasons_html(reasons: &[String]) -> String {
    if reasons.is_empty() {
        return String::new();
    }
    let items: String = reasons
        .iter()
        .map(|r| format!("<li>{}</li>", escape(r)))
        .collect();
    format!("<ul class=\"r\">{items}</ul>")
}

fn aging_table(title: &str, a: &Aging, with_not_due: bool) -> String {
    let mut o = format!(
        "<table><tr><th colspan=\"3\">{}</th></tr><tr><th>bucket</th><th class=\"n\">count</th><th class=\"n\">amount</th></tr>\n",
        escape(title)
    );
    let mut rows: Vec<(&str, &Tally)> = Vec::new();
    if with_not_due {
        rows.push(("not yet due", &a.not_due));
    }
    rows.extend([
        ("0–30 days", &a.d0_30),
        ("31–60 days", &a.d31_60),
        ("61–90 days", &a.d61_90),
        ("over 90 days", &a.over_90),
    ]);
    if with_not_due || a.undated.count > 0 {
        rows.push(("no date", &a.undated));
    }
    for (label, t) in rows {
        let _ = writeln!(
            o,
            "<tr><td>{label}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            t.count,
            amounts_html(t)
        );
    }
    o.push_str("</table>\n");
    o
}

fn amount_of(t: &Tally, c: &str) -> f64 {
    t.amount
        .get(c)
        .and_then(|a| a.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Currencies drawn in the chart (the largest by amount received).
const CHART_CURRENCIES: usize = 8;

/// Per currency, two stacked bars: receipts (automatic, suggested, open)
/// and open invoices (settled automatically, still open). Bars of one
/// currency share a scale; currencies are not converted.
fn chart(result: &FileResult) -> String {
    let s = &result.summary;
    let mut currencies: BTreeMap<String, f64> = BTreeMap::new();
    for c in s.receipts.amount.keys().chain(s.invoices.amount.keys()) {
        let v = amount_of(&s.receipts, c).max(amount_of(&s.invoices, c));
        currencies.insert(c.clone(), v);
    }
    let mut list: Vec<(String, f64)> = currencies.into_iter().collect();
    list.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let omitted = list.len().saturating_sub(CHART_CURRENCIES);
    list.truncate(CHART_CURRENCIES);
    if list.is_empty() {
        return "<p>No amounts to chart.</p>\n".into();
    }
    let (left, width, bar_h, gap) = (150.0, 520.0, 16.0, 8.0);
    let group_h = 2.0 * bar_h + gap + 22.0;
    let height = 30.0 + group_h * list.len() as f64;
    let total_w = left + width + 190.0;
    let mut o = format!(
        "<svg width=\"{total_w}\" height=\"{height}\" viewBox=\"0 0 {total_w} {height}\" role=\"img\" aria-label=\"Matched and open amounts per currency\">\n"
    );
    // Legend.
    let legend = [
        ("#2e8b57", "matched automatically"),
        ("#e0a526", "suggested"),
        ("#c0392b", "open"),
    ];
    let mut x = left;
    for (colour, label) in legend {
        let _ = writeln!(
            o,
            "<rect x=\"{x}\" y=\"4\" width=\"12\" height=\"12\" fill=\"{colour}\"/><text x=\"{}\" y=\"14\">{label}</text>",
            x + 16.0
        );
        x += 160.0;
    }
    for (k, (c, _)) in list.iter().enumerate() {
        let y0 = 30.0 + group_h * k as f64;
        let received = amount_of(&s.receipts, c);
        let invoiced = amount_of(&s.invoices, c);
        let scale = received.max(invoiced);
        let w = |v: f64| {
            if scale > 0.0 {
                (v / scale * width).max(0.0)
            } else {
                0.0
            }
        };
        let auto = amount_of(&s.auto, c);
        let sugg = amount_of(&s.suggested, c);
        let open = amount_of(&s.open, c);
        let remaining = amount_of(&s.invoices_remaining, c);
        let settled = (invoiced - remaining).max(0.0);
        let ce = escape(c);
        let _ = writeln!(
            o,
            "<text x=\"0\" y=\"{}\" font-weight=\"bold\">{ce}</text>",
            y0 + 12.0
        );
        // Receipts bar.
        let _ = writeln!(o, "<text x=\"20\" y=\"{}\">receipts</text>", y0 + 12.0);
        let mut x = left;
        for (v, colour) in [(auto, "#2e8b57"), (sugg, "#e0a526"), (open, "#c0392b")] {
            let ww = w(v);
            let _ = writeln!(
                o,
                "<rect x=\"{x:.1}\" y=\"{y0}\" width=\"{ww:.1}\" height=\"{bar_h}\" fill=\"{colour}\"/>"
            );
            x += ww;
        }
        let _ = writeln!(
            o,
            "<text x=\"{:.1}\" y=\"{}\">{} {ce}</text>",
            left + width + 6.0,
            y0 + 12.0,
            escape(&group(s.receipts.amount.get(c).map_or("0", String::as_str)))
        );
        // Invoices bar.
        let y1 = y0 + bar_h + 4.0;
        let _ = writeln!(o, "<text x=\"20\" y=\"{}\">open invoices</text>", y1 + 12.0);
        let ws = w(settled);
        let wr = w(remaining);
        let _ = writeln!(
            o,
            "<rect x=\"{left}\" y=\"{y1}\" width=\"{ws:.1}\" height=\"{bar_h}\" fill=\"#2e8b57\"/><rect x=\"{:.1}\" y=\"{y1}\" width=\"{wr:.1}\" height=\"{bar_h}\" fill=\"#c0392b\"/>",
            left + ws
        );
        let _ = writeln!(
            o,
            "<text x=\"{:.1}\" y=\"{}\">{} {ce}</text>",
            left + width + 6.0,
            y1 + 12.0,
            escape(&group(s.invoices.amount.get(c).map_or("0", String::as_str)))
        );
    }
    o.push_str("</svg>\n");
    if omitted > 0 {
        let _ = writeln!(
            o,
            "<p class=\"more\">{omitted} smaller currenc{} not drawn; see the totals.</p>",
            if omitted == 1 { "y" } else { "ies" }
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(group("1234567.50"), "1,234,567.50");
        assert_eq!(group("-1000"), "-1,000");
        assert_eq!(group("999.99"), "999.99");
        assert_eq!(group("abc"), "abc");
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
    }
}
