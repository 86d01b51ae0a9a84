//! Bank statement parsers: ISO 20022 camt.052/053/054, SWIFT MT940/MT942,
//! BAI2, OFX/QFX 1.x and 2.x, and profile-driven CSV exports.
//!
//! Every parser turns a bank file into [`Statement`]s whose lines are the
//! canonical [`BankTransaction`]. Reconciliation matches these lines against
//! open invoices, so the parsers are strict about the things matching relies
//! on (sign, amount, currency, dates, references) and keep every other field
//! that can help matching in [`BankTransaction::extra`].
//!
//! * [`parse`] reads a whole file held in memory.
//! * [`parse_reader`] streams: it emits a [`StatementEvent`] for each
//!   statement header, each transaction and each statement end, so a 500 MB
//!   camt.053, MT940 or BAI2 file is processed in flat memory. OFX and CSV are
//!   read whole (they are small in practice and their encodings need the
//!   whole text), up to [`MAX_WHOLE_FILE`].
//! * [`detect`] sniffs the content (never the file name).
//! * [`balance_check`] verifies opening + Σ amounts = closing.
//! * [`StatementDigest`] follows a streamed statement and gives its line
//!   keys, balance check and fingerprint without holding its lines.
//! * [`statement_fingerprint`] recognises a duplicate import.
//!
//! Dates: the booking date is camt `BookgDt` (else `ValDt`, else the message
//! creation date, with a warning), the MT940 entry date (else the value
//! date), the BAI2 group as-of date, OFX `DTPOSTED`. Where an entry has no
//! transaction details, camt `AddtlNtryInf` stands in as remittance text.
//!
//! Amounts are exact [`Decimal`]s: a debit is negative, a credit positive,
//! for transactions and balances alike. No input makes a parser panic: every
//! problem is a [`BankError`] naming the line, record, row or XML path.
//!
//! # CSV
//! CSV files need a [`CsvProfile`] (kept in concord's configuration), so
//! [`parse`] and [`parse_reader`] reject [`Format::Csv`]: call
//! [`csv::parse_csv`] with the profile, or [`csv::detect_profile`] to pick one.
//!
//! # OFX
//! Only bank (`STMTRS`) and credit card (`CCSTMTRS`) statements are read.
//! A file without them (brokerage, sign-on only, account listing) parses to
//! an **empty statement list**, unless the server reported an ERROR status
//! (failed sign-on, statement request refused): that is a
//! [`ErrorKind::NotAStatement`] error quoting the status, so a failed
//! download is never mistaken for a quiet day.
//!
//! # Keys in `extra`
//! All keys are snake_case; values are JSON strings unless noted.
//!
//! | key | formats | meaning |
//! | --- | --- | --- |
//! | `entry_status` | camt | `Sts` (BOOK, PDNG, INFO); PDNG/INFO lines are left out of [`balance_check`] |
//! | `reversal` | camt, MT940 | `true` (JSON bool) for a reversal (RvslInd, MT940 RC/RD) |
//! | `entry_reference` | camt | `NtryRef` |
//! | `additional_entry_info` | camt | `AddtlNtryInf` |
//! | `additional_transaction_info` | camt | `AddtlTxInf` |
//! | `entry_amount`, `entry_currency` | camt | the whole booked entry when it was split into several TxDtls |
//! | `batch_index`, `batch_size` | camt | position (1-based) and count of TxDtls within a batched entry (JSON numbers) |
//! | `batch_end_to_end_ids` | camt | JSON array of every TxDtls EndToEndId when a batch without per-detail amounts is kept as one line |
//! | `payment_information_id` | camt | `PmtInfId` (Refs or Btch) |
//! | `instruction_id` | camt | `InstrId` |
//! | `transaction_id` | camt | `TxId` |
//! | `mandate_id` | camt, MT940 | `MndtId`, `/MARF/`, `MREF+` |
//! | `creditor_id` | camt, MT940 | SEPA creditor id (`CdtrSchmeId`, `/CSID/`, `CRED+`) |
//! | `uetr` | camt | `UETR` |
//! | `clearing_system_reference` | camt | `ClrSysRef` |
//! | `cheque_number` | camt, OFX | `ChqNb`, `CHECKNUM` |
//! | `creditor_reference` | camt, MT940 | `Strd/CdtrRefInf/Ref` (RF, ISR, QR reference) |
//! | `creditor_reference_type` | camt | its `Tp/CdOrPrtry/Cd` or `Prtry` (SCOR, ISR Reference, QRR …) |
//! | `referred_document_numbers` | camt | `Strd/RfrdDocInf/Nb` (JSON array of strings) |
//! | `additional_remittance_info` | camt | `Strd/AddtlRmtInf`, joined with a space |
//! | `debtor_name`, `debtor_account` | camt | both parties are kept; the counterparty fields hold the *other* side |
//! | `creditor_name`, `creditor_account` | camt | |
//! | `ultimate_debtor`, `ultimate_creditor` | camt, MT940 | `UltmtDbtr`/`UltmtCdtr` name, `/ULTD/`, `/ULTC/`, `ABWA+`, `ABWE+` |
//! | `counterparty_bic` | camt, MT940 | debtor agent for credits, creditor agent for debits; `/BIC/`, `?30` |
//! | `purpose_code` | camt, MT940 | `Purp/Cd`, `/PURP/`, `?34`-less SEPA purpose |
//! | `instructed_amount`, `instructed_currency` | camt, MT940 | `AmtDtls/InstdAmt` / MT940 `/OCMT/` |
//! | `transaction_amount`, `transaction_currency` | camt | `AmtDtls/TxAmt` or `TxDtls/Amt` when it differs from the booked amount |
//! | `exchange_rate` | camt | `CcyXchg/XchgRate` |
//! | `bank_transaction_code_proprietary` | camt | `BkTxCd/Prtry/Cd` (the domain code takes `bank_transaction_code`) |
//! | `mt940_transaction_type` | MT940 | `:61:` type code, e.g. `NTRF` |
//! | `customer_reference` | MT940, OFX | `:61:` customer reference (NONREF dropped), OFX `REFNUM` |
//! | `supplementary_details` | MT940 | `:61:` second line |
//! | `funds_code` | MT940 | third currency letter in `:61:` |
//! | `information` | MT940 | the whole `:86:` text, as sent |
//! | `gv_code` | MT940 | German `:86:` business transaction code (first three digits) |
//! | `posting_text` | MT940 | `?00` |
//! | `prima_nota` | MT940 | `?10` |
//! | `counterparty_bank_code` | MT940 | `?30` (BLZ or BIC) |
//! | `text_key_extension` | MT940 | `?34` |
//! | `sepa` | MT940 | JSON object of SEPA keywords found in the purpose (`EREF`, `KREF`, `MREF`, `CRED`, `SVWZ`, `ABWA`, `ABWE`, `IBAN`, `BIC`, `DEBT`, `COAM`, `OAMT`) |
//! | `mt940_tags` | MT940 | JSON object of `/TAG/value/` pairs from the Dutch/SEPA `:86:` form |
//! | `bai_type_code` | BAI2 | three-digit type code of the 16 record |
//! | `funds_type` | BAI2 | funds type letter (0, 1, 2, S, V, D, Z) |
//! | `customer_reference` | BAI2 | 16 record customer reference |
//! | `bai_addenda` | BAI2 | JSON object of keyed `88` addenda (`EREF: …`, `DBNM: …`); EREF also fills `end_to_end_id`, DBNM/CRNM the counterparty |
//! | `fitid` | OFX | `FITID` (the bank's unique id; also used as `bank_reference`) |
//! | `ofx_transaction_type` | OFX | `TRNTYPE` |
//! | `user_date` | OFX | `DTUSER` |
//! | `payee` | OFX | `PAYEE` name |
//! | `memo` | OFX | `MEMO` |
//! | `sic` | OFX | `SIC` |
//! | `balance_after` | CSV | running balance column |
//! | `row` | CSV | 1-based physical row in the file (JSON number) |
//! | `csv_columns` | CSV | JSON object with the profile's `keep` columns |

mod bai2;
mod camt;
pub mod csv;
mod mt940;
mod ofx;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io::BufRead;

use chrono::{NaiveDate, NaiveDateTime};
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::model::{BankTransaction, Currency, MAX_SCALE, Money};

pub use self::csv::CsvProfile;

/// Largest OFX or CSV file accepted (they are read whole).
pub const MAX_WHOLE_FILE: usize = 256 * 1024 * 1024;

/// A bank file format.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Format {
    /// ISO 20022 BankToCustomerStatement (end-of-day statement).
    Camt053,
    /// ISO 20022 BankToCustomerDebitCreditNotification.
    Camt054,
    /// ISO 20022 BankToCustomerAccountReport (intraday).
    Camt052,
    /// SWIFT MT940 customer statement.
    Mt940,
    /// SWIFT MT942 interim transaction report.
    Mt942,
    /// BAI2 cash management balance reporting.
    Bai2,
    /// OFX / QFX, SGML 1.x or XML 2.x.
    Ofx,
    /// A CSV export described by the named [`CsvProfile`].
    Csv(String),
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Format::Camt053 => f.write_str("camt.053"),
            Format::Camt054 => f.write_str("camt.054"),
            Format::Camt052 => f.write_str("camt.052"),
            Format::Mt940 => f.write_str("MT940"),
            Format::Mt942 => f.write_str("MT942"),
            Format::Bai2 => f.write_str("BAI2"),
            Format::Ofx => f.write_str("OFX"),
            Format::Csv(p) => write!(f, "CSV ({p})"),
        }
    }
}

/// A balance stated in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Balance {
    /// The file's own type code: camt `OPBD`, `CLBD`, `ITBD`, `PRCD`, `CLAV`,
    /// `FWAV` …; MT940 tag `60F`, `60M`, `62F`, `62M`, `64`, `65`; BAI2 type
    /// code `010`, `015` …; OFX `LEDGERBAL`, `AVAILBAL`; CSV `CSV_OPENING`,
    /// `CSV_CLOSING`.
    pub kind: String,
    /// Date the balance refers to.
    pub date: NaiveDate,
    /// Signed amount: a debit (overdrawn) balance is negative.
    pub amount: Money,
}

/// A non-fatal oddity met while parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where: line, record, row or XML path.
    pub location: Location,
    /// What was odd and what the parser did about it.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Header of a statement, emitted before its transactions.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementHeader {
    /// Format actually found (a camt.054 passed as camt.053 reports camt.054).
    pub format: Format,
    /// Statement id: camt `Stmt/Id`, MT940 `:20:`, BAI2 group/file id, OFX none.
    pub id: Option<String>,
    /// Own account: IBAN or other id as written.
    pub account: String,
    /// Account servicer: BIC or bank id (camt `Svcr`, BAI2 originator, OFX `BANKID`).
    pub servicer: Option<String>,
    /// Account currency, where stated.
    pub currency: Option<Currency>,
    /// Electronic sequence number (camt `ElctrncSeqNb`, MT940 `:28C:`).
    pub sequence: Option<String>,
    /// Creation time as written by the bank (any UTC offset is dropped).
    pub created_at: Option<NaiveDateTime>,
    /// Message id (camt `GrpHdr/MsgId`, MT940 `:21:`).
    pub message_id: Option<String>,
}

/// End of a statement: its balances and the warnings collected for it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatementEnd {
    /// Every balance stated, in file order.
    pub balances: Vec<Balance>,
    /// Non-fatal oddities.
    pub warnings: Vec<Warning>,
}

/// What [`parse_reader`] emits, in file order: `Header`, then the
/// statement's `Transaction`s, then `End`, for each statement.
#[derive(Debug, Clone, PartialEq)]
pub enum StatementEvent {
    /// A statement starts.
    Header(StatementHeader),
    /// One line of the current statement.
    Transaction(Box<BankTransaction>),
    /// The current statement ends.
    End(StatementEnd),
}

/// A parsed statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// Format actually found.
    pub format: Format,
    /// Statement id (see [`StatementHeader::id`]).
    pub id: Option<String>,
    /// Own account.
    pub account: String,
    /// Account servicer (BIC / bank id).
    pub servicer: Option<String>,
    /// Account currency.
    pub currency: Option<Currency>,
    /// Sequence number.
    pub sequence: Option<String>,
    /// Creation time.
    pub created_at: Option<NaiveDateTime>,
    /// Message id.
    pub message_id: Option<String>,
    /// Opening booked balance (camt OPBD, else PRCD; MT940 60F/60M; BAI2 010).
    pub opening: Option<Balance>,
    /// Closing booked balance (camt CLBD; MT940 62F/62M; BAI2 015; OFX LEDGERBAL).
    pub closing: Option<Balance>,
    /// All balances, in file order.
    pub balances: Vec<Balance>,
    /// The lines.
    pub transactions: Vec<BankTransaction>,
    /// Non-fatal oddities.
    pub warnings: Vec<Warning>,
}

impl Statement {
    fn from_parts(
        h: StatementHeader,
        transactions: Vec<BankTransaction>,
        end: StatementEnd,
    ) -> Self {
        let (opening, closing) = opening_closing(&end.balances);
        Statement {
            format: h.format,
            id: h.id,
            account: h.account,
            servicer: h.servicer,
            currency: h.currency,
            sequence: h.sequence,
            created_at: h.created_at,
            message_id: h.message_id,
            opening,
            closing,
            balances: end.balances,
            transactions,
            warnings: end.warnings,
        }
    }
}

/// The opening and closing booked balances among a statement's balances.
fn opening_closing(balances: &[Balance]) -> (Option<Balance>, Option<Balance>) {
    let opening = pick_balance(balances, &["OPBD", "60F", "60M", "010", "CSV_OPENING"])
        .or_else(|| pick_balance(balances, &["PRCD"]));
    let closing = pick_balance(
        balances,
        &["CLBD", "62F", "62M", "015", "LEDGERBAL", "CSV_CLOSING"],
    );
    (opening, closing)
}

fn pick_balance(balances: &[Balance], kinds: &[&str]) -> Option<Balance> {
    balances
        .iter()
        .find(|b| kinds.contains(&b.kind.as_str()))
        .cloned()
}

/// Where a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Nowhere in particular (empty input, read failure before any data).
    File,
    /// 1-based physical line (MT940, BAI2, OFX SGML).
    Line(u64),
    /// 1-based CSV row (physical line of the row's start).
    Row(u64),
    /// XML element path such as `Document/BkToCstmrStmt/Stmt[2]/Ntry[5]/Amt`,
    /// with the byte offset the reader had reached.
    Xml {
        /// Element path; `[n]` marks the n-th repeated element (1-based).
        path: String,
        /// Byte offset in the file.
        byte: u64,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File => f.write_str("file"),
            Location::Line(n) => write!(f, "line {n}"),
            Location::Row(n) => write!(f, "row {n}"),
            Location::Xml { path, byte } => write!(f, "{path} (byte {byte})"),
        }
    }
}

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// The file is not well formed for its format.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// A field holds an unusable value.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidValue {
        /// Field name as the format calls it.
        field: String,
        /// The offending text (truncated).
        value: String,
        /// Why it is rejected.
        reason: String,
    },
    /// A required field is absent.
    #[error("missing {0}")]
    Missing(String),
    /// XML with a document type declaration: DTDs could fetch external
    /// entities or expand entity bombs, so they are refused outright.
    #[error(
        "DOCTYPE declarations are not accepted in bank files (possible entity expansion or external entity attack)"
    )]
    Doctype,
    /// A safety limit (depth, text size, node count, file size) was exceeded.
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// The file is well formed but holds no statement of this format.
    #[error("not a bank statement: {0}")]
    NotAStatement(String),
    /// The request cannot be served (e.g. CSV without a profile).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Reading the input failed.
    #[error("read error: {0}")]
    Io(String),
}

/// A fatal parse error: format, location and what is wrong.
///
/// Boxed so that `Result`s on the parsers' hot paths stay one word wide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {}: {}", .0.format, .0.location, .0.kind)]
pub struct BankError(Box<BankErrorInner>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct BankErrorInner {
    format: Format,
    location: Location,
    kind: ErrorKind,
}

impl BankError {
    pub(crate) fn new(format: Format, location: Location, kind: ErrorKind) -> Self {
        BankError(Box::new(BankErrorInner {
            format,
            location,
            kind,
        }))
    }

    /// Format being parsed.
    pub fn format(&self) -> &Format {
        &self.0.format
    }

    /// Where: line, row or XML path.
    pub fn location(&self) -> &Location {
        &self.0.location
    }

    /// What is wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.0.kind
    }
}

/// Error of the streaming entry point: the file, or the sink, failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError<E> {
    /// The input is broken.
    #[error(transparent)]
    Parse(#[from] BankError),
    /// The sink returned an error; parsing stopped there.
    #[error("sink rejected event: {0}")]
    Sink(E),
}

/// Sniffs the first bytes of a file (a few KiB are enough) for its format.
///
/// Looks at content only. Returns `None` for CSV (which needs a profile, see
/// [`csv::detect_profile`]) and for anything unrecognised.
pub fn detect(head: &[u8]) -> Option<Format> {
    let text = decode_head(head);
    let t = text.trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n', '\u{1}']);
    if t.starts_with('<') || t.contains("<Document") {
        if t.contains("camt.053") || t.contains("BkToCstmrStmt") {
            return Some(Format::Camt053);
        }
        if t.contains("camt.054") || t.contains("BkToCstmrDbtCdtNtfctn") {
            return Some(Format::Camt054);
        }
        if t.contains("camt.052") || t.contains("BkToCstmrAcctRpt") {
            return Some(Format::Camt052);
        }
        if t.contains("<OFX") || t.contains("<?OFX") {
            return Some(Format::Ofx);
        }
    }
    if t.starts_with("OFXHEADER") || t.contains("<OFX>") {
        return Some(Format::Ofx);
    }
    if t.starts_with("01,") {
        return Some(Format::Bai2);
    }
    // MT940/942: a :20: tag near the top, possibly behind SWIFT blocks or a
    // bank's own preamble lines.
    if t.contains("{2:O942") || t.contains("{2:I942") {
        return Some(Format::Mt942);
    }
    let has = |tag: &str| t.lines().take(64).any(|l| l.trim_start().starts_with(tag));
    if has(":20:") && (has(":25:") || has(":28")) {
        if has(":13D:") || has(":34F:") || t.contains("{2:O942") {
            return Some(Format::Mt942);
        }
        return Some(Format::Mt940);
    }
    None
}

fn decode_head(head: &[u8]) -> String {
    let (enc, _) = encoding_rs::Encoding::for_bom(head).unwrap_or((encoding_rs::UTF_8, 0));
    let (s, _, _) = enc.decode(head);
    s.into_owned()
}

/// Parses a whole file held in memory.
///
/// Returns every statement in the file. An empty list means the file was
/// valid but had no statement (OFX without bank statements).
pub fn parse(bytes: &[u8], format: Format) -> Result<Vec<Statement>, BankError> {
    let mut out = Vec::new();
    let mut cur: Option<(StatementHeader, Vec<BankTransaction>)> = None;
    let res = parse_reader(bytes, format.clone(), |ev| -> Result<(), BankError> {
        match ev {
            StatementEvent::Header(h) => cur = Some((h, Vec::new())),
            StatementEvent::Transaction(t) => {
                if let Some((_, txs)) = cur.as_mut() {
                    txs.push(*t);
                }
            }
            StatementEvent::End(end) => {
                if let Some((h, txs)) = cur.take() {
                    out.push(Statement::from_parts(h, txs, end));
                }
            }
        }
        Ok(())
    });
    match res {
        Ok(()) => Ok(out),
        Err(StreamError::Parse(e)) | Err(StreamError::Sink(e)) => Err(e),
    }
}

/// Streams a file: `sink` receives each statement header, transaction and
/// statement end as they are read, so memory stays flat for camt, MT940 and
/// BAI2 whatever the file size. OFX and CSV are read whole (up to
/// [`MAX_WHOLE_FILE`]).
///
/// Events already emitted stay valid when a later part of the file turns
/// out to be broken; callers importing into a store should stage them until
/// the call returns `Ok`.
pub fn parse_reader<R: BufRead, E>(
    reader: R,
    format: Format,
    mut sink: impl FnMut(StatementEvent) -> Result<(), E>,
) -> Result<(), StreamError<E>> {
    match format {
        Format::Camt052 | Format::Camt053 | Format::Camt054 => {
            camt::parse(reader, format, &mut sink)
        }
        Format::Mt940 | Format::Mt942 => mt940::parse(reader, format, &mut sink),
        Format::Bai2 => bai2::parse(reader, &mut sink),
        Format::Ofx => {
            let bytes = read_whole(reader, &Format::Ofx)?;
            ofx::parse(&bytes, &mut sink)
        }
        Format::Csv(name) => Err(StreamError::Parse(BankError::new(
            Format::Csv(name.clone()),
            Location::File,
            ErrorKind::Unsupported(format!(
                "CSV needs its profile: call bank::csv::parse_csv with profile {name:?}"
            )),
        ))),
    }
}

fn read_whole<R: BufRead, E>(mut reader: R, format: &Format) -> Result<Vec<u8>, StreamError<E>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let limit = MAX_WHOLE_FILE as u64 + 1;
    (&mut reader)
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            BankError::new(format.clone(), Location::File, ErrorKind::Io(e.to_string()))
        })?;
    if bytes.len() > MAX_WHOLE_FILE {
        return Err(BankError::new(
            format.clone(),
            Location::File,
            ErrorKind::Limit(format!(
                "{format} files are read whole; at most {MAX_WHOLE_FILE} bytes"
            )),
        )
        .into());
    }
    Ok(bytes)
}

/// Result of [`balance_check`] for one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceCheck {
    /// Currency of the opening balance; only lines in it are summed.
    pub currency: Currency,
    /// Opening balance.
    pub opening: Decimal,
    /// Sum of the counted lines.
    pub sum: Decimal,
    /// Number of lines summed.
    pub counted: usize,
    /// Lines left out: other currency, or camt status PDNG/INFO.
    pub skipped: usize,
    /// opening + sum.
    pub expected_closing: Decimal,
    /// The stated closing balance.
    pub actual_closing: Decimal,
    /// actual − expected (zero when it balances).
    pub difference: Decimal,
    /// Set when the check cannot succeed for a structural reason.
    pub note: Option<String>,
}

impl BalanceCheck {
    /// True when the closing balance is the opening plus the lines.
    pub fn is_ok(&self) -> bool {
        self.note.is_none() && self.difference.is_zero()
    }
}

/// Verifies opening + Σ amounts = closing, in the opening balance's
/// currency. `None` when the statement lacks an opening or closing balance.
///
/// camt lines with status PDNG or INFO are not booked and are skipped. If
/// the opening and closing currencies differ the check fails with a note.
pub fn balance_check(st: &Statement) -> Option<BalanceCheck> {
    let mut tally = BalanceTally::default();
    for t in &st.transactions {
        tally.add(t);
    }
    tally.check(st.opening.as_ref(), st.closing.as_ref())
}

/// Running sums of a statement's lines per currency, so that the balance
/// check can be made when the balances arrive at the statement's end
/// without keeping the lines.
#[derive(Debug, Clone, Default)]
struct BalanceTally {
    /// Booked lines per currency: (currency, sum, lines, overflowed).
    booked: Vec<(Currency, Decimal, usize, bool)>,
    /// Lines with camt status PDNG or INFO.
    unbooked: usize,
}

impl BalanceTally {
    fn add(&mut self, t: &BankTransaction) {
        let unbooked = matches!(
            t.extra.get("entry_status").and_then(Value::as_str),
            Some("PDNG" | "INFO")
        );
        if unbooked {
            self.unbooked += 1;
            return;
        }
        let slot = match self.booked.iter().position(|(c, ..)| *c == t.currency) {
            Some(i) => &mut self.booked[i],
            None => {
                self.booked.push((t.currency, Decimal::ZERO, 0, false));
                self.booked.last_mut().expect("just pushed")
            }
        };
        match slot.1.checked_add(t.amount) {
            Some(s) => slot.1 = s,
            None => slot.3 = true,
        }
        slot.2 += 1;
    }

    fn check(&self, opening: Option<&Balance>, closing: Option<&Balance>) -> Option<BalanceCheck> {
        let (opening, closing) = (opening?, closing?);
        let ccy = opening.amount.currency();
        let (mut sum, mut counted, mut overflow) = (Decimal::ZERO, 0, false);
        let mut other = 0;
        for &(c, s, n, o) in &self.booked {
            if c == ccy {
                (sum, counted, overflow) = (s, n, o);
            } else {
                other += n;
            }
        }
        let mut note = overflow.then(|| "sum overflows a decimal".to_owned());
        let expected = opening
            .amount
            .amount()
            .checked_add(sum)
            .unwrap_or(Decimal::MAX);
        let actual = closing.amount.amount();
        if closing.amount.currency() != ccy {
            note = Some(format!(
                "opening balance is in {ccy} but closing balance in {}",
                closing.amount.currency()
            ));
        }
        Some(BalanceCheck {
            currency: ccy,
            opening: opening.amount.amount(),
            sum,
            counted,
            skipped: self.unbooked + other,
            expected_closing: expected,
            actual_closing: actual,
            difference: actual.checked_sub(expected).unwrap_or(Decimal::MAX),
            note,
        })
    }
}

/// Identity of a statement for duplicate-import detection.
///
/// `account:id:sequence` when the file numbers its statements (camt
/// `ElctrncSeqNb`, MT940 `:28C:` with a non-zero number); otherwise
/// `account:sha256:<hex>` over the statement's lines and balances (dates,
/// amounts, currencies, references), which is stable across re-downloads of
/// the same statement but changes if any line changes. Banks that reuse
/// `:20:` values (`STARTUMSE`) and send `:28C:00000` get the hash form.
pub fn statement_fingerprint(st: &Statement) -> String {
    let mut f = Fingerprint::new(&st.format);
    for t in &st.transactions {
        f.line(t);
    }
    f.finish(
        &st.account,
        st.id.as_deref(),
        st.sequence.as_deref(),
        &st.balances,
    )
}

/// [`statement_fingerprint`] fed one line at a time. Lines are hashed
/// before balances because a stream meets the closing balance last.
#[derive(Debug, Clone)]
struct Fingerprint(Sha256);

impl Fingerprint {
    fn new(format: &Format) -> Self {
        let mut h = Sha256::new();
        h.update(format.to_string().as_bytes());
        Fingerprint(h)
    }

    fn line(&mut self, t: &BankTransaction) {
        self.0.update(
            format!(
                "|T{}|{:?}|{}|{}|{:?}|{:?}|{:?}",
                t.booking_date,
                t.value_date,
                t.amount,
                t.currency,
                t.bank_reference,
                t.end_to_end_id,
                t.remittance_info
            )
            .as_bytes(),
        );
    }

    fn finish(
        mut self,
        account: &str,
        id: Option<&str>,
        sequence: Option<&str>,
        balances: &[Balance],
    ) -> String {
        // The statement number is the part before any `/page`; all zeros
        // means the bank does not number its statements.
        let numbered = sequence.is_some_and(|s| {
            s.split('/')
                .next()
                .unwrap_or("")
                .bytes()
                .any(|b| b.is_ascii_alphanumeric() && b != b'0')
        });
        if let (Some(id), true) = (id.filter(|s| !s.trim().is_empty()), numbered) {
            return format!("{account}:{}:{}", id.trim(), sequence.unwrap_or("").trim());
        }
        for b in balances {
            self.0
                .update(format!("|B{}|{}|{}", b.kind, b.date, b.amount).as_bytes());
        }
        format!("{account}:sha256:{}", hex(&self.0.finalize()))
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// One key per line of `st`, stable across re-imports of the same data in
/// any file (an intraday camt.052 and the end-of-day camt.053 that repeats
/// its lines give the same keys): account, dates, amount, currency,
/// references, counterparty and remittance, plus an occurrence counter so
/// that two identical lines of one statement stay two lines.
pub fn line_keys(st: &Statement) -> Vec<String> {
    let mut keys = LineKeys::default();
    st.transactions.iter().map(|t| keys.key(t)).collect()
}

/// [`line_keys`] one line at a time, for a statement read as a stream.
///
/// Holds 16 bytes and a counter per distinct line of the statement (to
/// number repeated lines), never the lines themselves.
#[derive(Debug, Clone, Default)]
pub struct LineKeys {
    seen: std::collections::HashMap<[u8; 16], u32>,
}

impl LineKeys {
    /// The key of the statement's next line.
    pub fn key(&mut self, t: &BankTransaction) -> String {
        let mut h = Sha256::new();
        h.update(
            format!(
                "{}|{}|{:?}|{}|{}|{:?}|{:?}|{:?}|{:?}|{:?}",
                t.account,
                t.booking_date,
                t.value_date,
                t.amount.normalize(),
                t.currency,
                t.bank_reference,
                t.end_to_end_id,
                t.counterparty_account,
                t.counterparty_name,
                t.remittance_info
            )
            .as_bytes(),
        );
        let digest = h.finalize();
        let mut short = [0u8; 16];
        short.copy_from_slice(&digest[..16]);
        let n = self.seen.entry(short).or_insert(0);
        *n += 1;
        format!("{}:{}:{n}", t.account, hex(&short))
    }
}

/// What a statement read as a stream comes to: its header, how many lines
/// it had, its balances and their check, and its fingerprint — everything
/// [`Statement`] gives except the lines.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementSummary {
    /// Format actually found.
    pub format: Format,
    /// Statement id (see [`StatementHeader::id`]).
    pub id: Option<String>,
    /// Own account.
    pub account: String,
    /// Sequence number.
    pub sequence: Option<String>,
    /// Message id.
    pub message_id: Option<String>,
    /// Number of lines.
    pub lines: usize,
    /// Every balance stated, in file order.
    pub balances: Vec<Balance>,
    /// [`balance_check`] of the statement.
    pub balance_check: Option<BalanceCheck>,
    /// [`statement_fingerprint`] of the statement.
    pub fingerprint: String,
    /// Non-fatal oddities.
    pub warnings: Vec<Warning>,
}

/// Follows one statement through [`parse_reader`]'s events and gives what
/// [`line_keys`], [`balance_check`] and [`statement_fingerprint`] give for
/// the whole [`Statement`], without holding its lines.
#[derive(Debug, Clone)]
pub struct StatementDigest {
    header: StatementHeader,
    keys: LineKeys,
    tally: BalanceTally,
    fingerprint: Fingerprint,
    lines: usize,
}

impl StatementDigest {
    /// Starts on a statement's [`StatementEvent::Header`].
    pub fn new(header: StatementHeader) -> Self {
        StatementDigest {
            fingerprint: Fingerprint::new(&header.format),
            header,
            keys: LineKeys::default(),
            tally: BalanceTally::default(),
            lines: 0,
        }
    }

    /// Takes the statement's next line; returns its [`line_keys`] key.
    pub fn line(&mut self, t: &BankTransaction) -> String {
        self.lines += 1;
        self.tally.add(t);
        self.fingerprint.line(t);
        self.keys.key(t)
    }

    /// Ends the statement on its [`StatementEvent::End`].
    pub fn finish(self, end: StatementEnd) -> StatementSummary {
        let (opening, closing) = opening_closing(&end.balances);
        let h = self.header;
        StatementSummary {
            balance_check: self.tally.check(opening.as_ref(), closing.as_ref()),
            fingerprint: self.fingerprint.finish(
                &h.account,
                h.id.as_deref(),
                h.sequence.as_deref(),
                &end.balances,
            ),
            format: h.format,
            id: h.id,
            account: h.account,
            sequence: h.sequence,
            message_id: h.message_id,
            lines: self.lines,
            balances: end.balances,
            warnings: end.warnings,
        }
    }
}

// ---------------------------------------------------------------------------
// Shared helpers

/// Longest physical line the line-based formats (MT940, BAI2) accept.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// Reads one line of at most [`MAX_LINE`] bytes into `buf` (cleared first).
/// `Ok(false)` at the end of the input.
pub(crate) fn read_capped_line<R: BufRead>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> Result<bool, ErrorKind> {
    use std::io::Read;
    buf.clear();
    let n = reader
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', buf)
        .map_err(|e| ErrorKind::Io(e.to_string()))?;
    if buf.len() > MAX_LINE && !buf.ends_with(b"\n") {
        return Err(ErrorKind::Limit(format!(
            "line longer than {MAX_LINE} bytes"
        )));
    }
    Ok(n > 0)
}

/// Longest excerpt of input copied into messages.
const SNIPPET_CHARS: usize = 80;

pub(crate) fn snippet(s: &str) -> String {
    match s.char_indices().nth(SNIPPET_CHARS) {
        None => s.to_owned(),
        Some((cut, _)) => format!("{}…", s.get(..cut).unwrap_or("")),
    }
}

/// Parses an unsigned decimal with the given decimal separator and no
/// grouping; a trailing separator (`12,`) means no decimals (MT940).
/// Returns a reason on failure.
pub(crate) fn parse_unsigned(s: &str, sep: u8) -> Result<Decimal, String> {
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return Err("empty amount".into());
    }
    let mut int_end = bytes.len();
    let mut seen_sep = false;
    for (i, &b) in bytes.iter().enumerate() {
        if b == sep {
            if seen_sep {
                return Err("more than one decimal separator".into());
            }
            seen_sep = true;
            int_end = i;
        } else if !b.is_ascii_digit() {
            return Err(format!("unexpected character {:?}", char::from(b)));
        }
    }
    let int = s.get(..int_end).unwrap_or("");
    let frac = if seen_sep {
        s.get(int_end + 1..).unwrap_or("")
    } else {
        ""
    };
    if int.is_empty() && frac.is_empty() {
        return Err("no digits".into());
    }
    if frac.len() > MAX_SCALE as usize {
        return Err(format!("more than {MAX_SCALE} decimal places"));
    }
    let int = int.trim_start_matches('0');
    if int.len() + frac.len() > 28 {
        return Err("too many digits".into());
    }
    let mut digits = String::with_capacity(int.len() + frac.len() + 1);
    digits.push_str(if int.is_empty() { "0" } else { int });
    if !frac.is_empty() {
        digits.push('.');
        digits.push_str(frac);
    }
    Decimal::from_str_exact(&digits).map_err(|_| "does not fit in a decimal".into())
}

/// Applies a sign, normalising negative zero to zero.
pub(crate) fn signed(amount: Decimal, negative: bool) -> Decimal {
    let mut d = amount;
    d.set_sign_negative(negative && !amount.is_zero());
    d
}

/// Parses a currency code, trimmed and upper-cased.
pub(crate) fn currency(code: &str) -> Result<Currency, String> {
    Currency::parse(&code.trim().to_ascii_uppercase())
        .map_err(|_| "not an active ISO 4217 currency code".to_owned())
}

pub(crate) fn money(amount: Decimal, ccy: Currency) -> Result<Money, String> {
    Money::new(amount, ccy).map_err(|e| e.to_string())
}

/// An empty transaction to fill in.
pub(crate) fn new_transaction(
    account: &str,
    booking_date: NaiveDate,
    amount: Decimal,
    currency: Currency,
) -> BankTransaction {
    BankTransaction {
        id: None,
        account: account.to_owned(),
        booking_date,
        value_date: None,
        amount,
        currency,
        counterparty_name: None,
        counterparty_account: None,
        remittance_info: None,
        end_to_end_id: None,
        bank_reference: None,
        bank_transaction_code: None,
        extra: Map::new(),
    }
}

/// Inserts a trimmed non-empty string into `extra`.
pub(crate) fn put(extra: &mut Map<String, Value>, key: &str, value: &str) {
    let v = value.trim();
    if !v.is_empty() {
        extra.insert(key.to_owned(), Value::String(v.to_owned()));
    }
}

/// Trimmed, non-empty owned string.
pub(crate) fn opt(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// Collapses runs of whitespace (line breaks in wrapped fields) to one space.
pub(crate) fn squash(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for w in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

/// A balance check in one line, for people: `ok — …` or `MISMATCH — …`.
pub fn check_line(check: &Option<BalanceCheck>) -> String {
    match check {
        None => "balance check: no opening and closing balance in the file".to_owned(),
        Some(c) if c.is_ok() => format!(
            "balance check: ok — {} + {} = {} {}",
            c.opening, c.sum, c.actual_closing, c.currency
        ),
        Some(c) => format!(
            "balance check: MISMATCH — opening {} + lines {} = {} {}, but the closing balance is {} (difference {}){}",
            c.opening,
            c.sum,
            c.expected_closing,
            c.currency,
            c.actual_closing,
            c.difference,
            c.note
                .as_ref()
                .map(|n| format!("; {n}"))
                .unwrap_or_default()
        ),
    }
}
