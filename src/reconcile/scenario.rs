//! A seeded generator of realistic, labelled reconciliation scenarios, for
//! accuracy tests, benchmarks and demonstrations.
//!
//! [`generate`] builds customers (German, French, Italian, Spanish, Dutch,
//! British, Polish, Nordic, Chinese and Japanese company names; EUR, USD,
//! GBP, CHF, CNY and JPY), their open invoices, and a bank statement whose
//! every receipt carries a [`Label`]: what kind of payment it is and which
//! allocations are right. The same seed gives the same scenario on every
//! machine.

use std::io::{self, Write};

use chrono::{Days, NaiveDate};
use rust_decimal::Decimal;

use super::{Receipt, Receivable};
use crate::model::Currency;

/// The kinds of receipt the generator makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Exact amount, the invoice number as printed (or the RF reference).
    Clean,
    /// Exact amount, the invoice number typed differently.
    MangledReference,
    /// Exact amount, no reference: only payer and amount.
    NoReference,
    /// Several invoices of one customer in one payment.
    Combined,
    /// Part of the open amount, with a reference.
    Partial,
    /// The open amount less bank charges.
    BankFee,
    /// More than the open amount.
    Overpayment,
    /// Refunds, interest and other credits that pay no invoice.
    Unrelated,
    /// An amount that some invoice also has, from someone who does not owe
    /// it — or owed by two look-alike customers with nothing to tell them
    /// apart. Must never be matched automatically.
    LookAlike,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 9] = [
        Kind::Clean,
        Kind::MangledReference,
        Kind::NoReference,
        Kind::Combined,
        Kind::Partial,
        Kind::BankFee,
        Kind::Overpayment,
        Kind::Unrelated,
        Kind::LookAlike,
    ];

    /// Snake-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Clean => "clean",
            Kind::MangledReference => "mangled_reference",
            Kind::NoReference => "no_reference",
            Kind::Combined => "combined",
            Kind::Partial => "partial",
            Kind::BankFee => "bank_fee",
            Kind::Overpayment => "overpayment",
            Kind::Unrelated => "unrelated",
            Kind::LookAlike => "look_alike",
        }
    }
}

/// The truth about one receipt.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    /// What kind of payment it is.
    pub kind: Kind,
    /// The right allocations (invoice number, amount), ascending by invoice
    /// number; empty when the receipt pays no invoice.
    pub truth: Vec<(String, Decimal)>,
    /// False when nothing in the data can tell the right invoice from
    /// another (look-alike customers): then no automatic match is right.
    pub identifiable: bool,
}

/// A generated scenario: receipts with their labels (same order) and the
/// open receivables.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Receipts of the bank statement.
    pub receipts: Vec<Receipt>,
    /// One label per receipt.
    pub labels: Vec<Label>,
    /// Open receivables, including invoices nobody pays this time.
    pub receivables: Vec<Receivable>,
}

/// Size and seed of a scenario.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Seed of the pseudo-random generator.
    pub seed: u64,
    /// Number of receipts.
    pub receipts: usize,
    /// Number of open receivables (at least those the receipts pay).
    pub receivables: usize,
}

/// SplitMix64: small, fast, and the same everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }

    /// Shuffles in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below(i + 1);
            xs.swap(i, j);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    De,
    Fr,
    It,
    Es,
    Nl,
    En,
    Pl,
    Nordic,
    Zh,
    Ja,
}

const SURNAMES: &[&str] = &[
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Schulz",
    "Hoffmann",
    "Koch",
    "Richter",
    "Klein",
    "Wolf",
    "Schröder",
    "Neumann",
    "Schwarz",
    "Zimmermann",
    "Braun",
    "Krüger",
    "Hartmann",
    "Lange",
    "Werner",
    "Krause",
    "Lehmann",
    "Dupont",
    "Martin",
    "Bernard",
    "Dubois",
    "Lefèvre",
    "Moreau",
    "Laurent",
    "Girard",
    "Rossi",
    "Russo",
    "Ferrari",
    "Esposito",
    "Bianchi",
    "Romano",
    "Colombo",
    "García",
    "Fernández",
    "González",
    "Rodríguez",
    "López",
    "Martínez",
    "Sánchez",
    "Van Dijk",
    "De Vries",
    "Jansen",
    "Bakker",
    "Visser",
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "Wilson",
    "Evans",
    "Thompson",
    "O'Brien",
    "Murphy",
    "Nowak",
    "Kowalski",
    "Wiśniewski",
    "Andersson",
    "Johansson",
    "Nielsen",
    "Hansen",
    "Virtanen",
    "Lindqvist",
];

const PLACES: &[&str] = &[
    "Nord",
    "Süd",
    "West",
    "Ost",
    "Berlin",
    "Hamburg",
    "München",
    "Köln",
    "Lyon",
    "Paris",
    "Milano",
    "Torino",
    "Madrid",
    "Sevilla",
    "Rotterdam",
    "Utrecht",
    "London",
    "Leeds",
    "Zürich",
    "Wien",
    "Kraków",
    "Malmö",
    "Aarhus",
    "Tampere",
    "Rhein",
    "Alpen",
    "Atlantic",
    "Europa",
];

fn industries(lang: Lang) -> &'static [&'static str] {
    match lang {
        Lang::De => &[
            "Maschinenbau",
            "Metallbau",
            "Elektrotechnik",
            "Logistik",
            "Holzbau",
            "Haustechnik",
            "Fahrzeugbau",
            "Kunststofftechnik",
            "Feinmechanik",
            "Druckerei",
            "Verpackung",
            "Anlagenbau",
            "Stahlhandel",
            "Medizintechnik",
            "Spedition",
        ],
        Lang::Fr => &[
            "Logistique",
            "Transports",
            "Bâtiment",
            "Électronique",
            "Emballage",
            "Distribution",
            "Mécanique",
        ],
        Lang::It => &[
            "Costruzioni",
            "Meccanica",
            "Trasporti",
            "Impianti",
            "Alimentari",
            "Tessile",
        ],
        Lang::Es => &[
            "Construcciones",
            "Alimentación",
            "Transportes",
            "Ingeniería",
            "Distribuciones",
        ],
        Lang::Nl => &[
            "Transport",
            "Techniek",
            "Installatie",
            "Bouw",
            "Groothandel",
        ],
        Lang::En | Lang::Nordic | Lang::Pl => &[
            "Engineering",
            "Logistics",
            "Trading",
            "Consulting",
            "Manufacturing",
            "Supplies",
            "Systems",
            "Foods",
            "Components",
        ],
        Lang::Zh => &[
            "贸易",
            "电子科技",
            "机械制造",
            "物流",
            "建筑工程",
            "化工",
            "纺织",
            "食品",
            "医药",
            "信息技术",
            "汽车配件",
            "新材料",
        ],
        Lang::Ja => &["精機", "電機", "商事", "工業", "化学", "物産"],
    }
}

fn legal_forms(lang: Lang) -> &'static [&'static str] {
    match lang {
        Lang::De => &[
            "GmbH",
            "AG",
            "GmbH & Co. KG",
            "KG",
            "e.K.",
            "UG (haftungsbeschränkt)",
        ],
        Lang::Fr => &["SA", "SARL", "SAS"],
        Lang::It => &["S.p.A.", "S.r.l."],
        Lang::Es => &["S.A.", "S.L."],
        Lang::Nl => &["B.V.", "N.V."],
        Lang::En => &["Ltd", "Limited", "PLC", "LLC", "Inc."],
        Lang::Pl => &["Sp. z o.o.", "S.A."],
        Lang::Nordic => &["AB", "A/S", "Oy"],
        Lang::Zh => &["有限公司", "股份有限公司", "有限责任公司"],
        Lang::Ja => &["株式会社"],
    }
}

const ZH_CITIES: &[&str] = &[
    "上海", "北京", "深圳", "广州", "杭州", "南京", "苏州", "天津", "成都", "武汉", "重庆", "西安",
    "宁波", "厦门", "青岛",
];

const ZH_CORES: &[&str] = &[
    "华信", "腾达", "东方", "宏远", "鑫源", "恒通", "瑞丰", "金泰", "永盛", "中联", "新华", "天成",
    "博远", "嘉禾", "盛世", "长城", "海通", "安泰", "富源", "众诚", "合力", "鼎盛", "明辉", "佳美",
];

const JA_CORES: &[&str] = &[
    "田中", "山本", "佐藤", "鈴木", "高橋", "渡辺", "伊藤", "中村", "小林", "加藤",
];

/// Payers that owe nothing: authorities, banks, marketplaces, insurers.
const UNRELATED_PAYERS: &[&str] = &[
    "Finanzamt München",
    "Deutsche Bank AG",
    "Stadtwerke Köln GmbH",
    "Amazon Payments Europe S.C.A.",
    "AXA Versicherung AG",
    "HM Revenue & Customs",
    "Commerzbank AG",
    "国家税务总局上海市税务局",
    "中国工商银行",
    "Allianz SE",
    "PayPal Europe S.a.r.l. et Cie",
    "Bundesagentur für Arbeit",
];

const UNRELATED_TEXTS: &[&str] = &[
    "Habenzinsen 01.01.-31.03.",
    "Erstattung Umsatzsteuer 2025",
    "Refund order 302-4417719-5566128",
    "Gutschrift Versicherungsleistung",
    "Interest Q1",
    "退税",
    "Rückerstattung Abschlag",
    "Cashback",
    "Bonus Gutschrift",
];

const NO_REFERENCE_TEXTS: &[&str] = &[
    "Payment",
    "Zahlung",
    "Überweisung",
    "货款",
    "Thank you",
    "Paiement facture",
    "Pagamento",
    "Rechnungsausgleich",
];

const COMBINED_TEXTS: &[&str] = &[
    "Sammelzahlung",
    "Invoices March",
    "Payment of open items",
    "货款 三月",
    "Diverse Rechnungen",
];

#[derive(Debug, Clone)]
struct Customer {
    id: String,
    name: String,
    lang: Lang,
    currency: Currency,
    account: Option<String>,
    /// The same core name as another customer.
    twin: Option<usize>,
}

/// A valid German IBAN with the given 18-digit account part.
fn iban(rng: &mut Rng) -> String {
    let bban: String = (0..18)
        .map(|_| char::from(b'0' + rng.below(10) as u8))
        .collect();
    // Check digits: 98 - (BBAN + "DE00" as digits) mod 97; D = 13, E = 14.
    let digits = format!("{bban}131400");
    let rem = digits
        .bytes()
        .fold(0u32, |acc, b| (acc * 10 + u32::from(b - b'0')) % 97);
    format!("DE{:02}{bban}", 98 - rem)
}

/// An ISO 11649 creditor reference for `body` (letters and digits).
fn rf_reference(body: &str) -> String {
    let rearranged = format!("{body}RF00");
    let mut rem: u32 = 0;
    for c in rearranged.bytes() {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            _ => u32::from(c.to_ascii_uppercase() - b'A') + 10,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    format!("RF{:02}{body}", 98 - rem)
}

fn currency(code: &str) -> Currency {
    // The codes used here are all in the table.
    Currency::parse(code).unwrap_or_else(|_| Currency::all().next().expect("currency table"))
}

fn make_customer(rng: &mut Rng, n: usize) -> Customer {
    let lang = *rng.pick(&[
        Lang::De,
        Lang::De,
        Lang::De,
        Lang::Fr,
        Lang::It,
        Lang::Es,
        Lang::Nl,
        Lang::En,
        Lang::En,
        Lang::Pl,
        Lang::Nordic,
        Lang::Zh,
        Lang::Zh,
        Lang::Ja,
    ]);
    let legal = *rng.pick(legal_forms(lang));
    let industry = *rng.pick(industries(lang));
    let name = match lang {
        Lang::Zh => {
            let city = *rng.pick(ZH_CITIES);
            let shi = if rng.chance(0.3) { "市" } else { "" };
            format!("{city}{shi}{}{industry}{legal}", rng.pick(ZH_CORES))
        }
        Lang::Ja => {
            if rng.chance(0.5) {
                format!("{legal}{}{industry}", rng.pick(JA_CORES))
            } else {
                format!("{}{industry}{legal}", rng.pick(JA_CORES))
            }
        }
        _ => {
            let surname = *rng.pick(SURNAMES);
            let mut s = match rng.below(4) {
                0 => format!("{surname} & {} {industry}", rng.pick(SURNAMES)),
                1 => format!("{industry} {surname}"),
                _ => format!("{surname} {industry}"),
            };
            if rng.chance(0.6) {
                s.push(' ');
                s.push_str(rng.pick::<&str>(PLACES));
            }
            format!("{s} {legal}")
        }
    };
    let code = match lang {
        Lang::De | Lang::Fr | Lang::It | Lang::Es | Lang::Nl => {
            if name.contains("Zürich") {
                "CHF"
            } else if rng.chance(0.9) {
                "EUR"
            } else {
                "USD"
            }
        }
        Lang::En => *rng.pick(&["GBP", "GBP", "USD", "EUR"]),
        Lang::Pl | Lang::Nordic => *rng.pick(&["EUR", "EUR", "USD"]),
        Lang::Zh => *rng.pick(&["CNY", "CNY", "CNY", "USD"]),
        Lang::Ja => "JPY",
    };
    Customer {
        id: format!("C{n:06}"),
        name,
        lang,
        currency: currency(code),
        account: rng.chance(0.75).then(|| iban(rng)),
        twin: None,
    }
}

/// A twin: the same name under another legal form, paying from an unknown
/// account.
fn make_twin(of: &Customer, n: usize, twin_of: usize) -> Customer {
    let mut name = of.name.clone();
    let forms = legal_forms(of.lang);
    if let Some(form) = forms.iter().find(|f| name.ends_with(*f)) {
        name.truncate(name.len() - form.len());
        let other = forms.iter().find(|f| *f != form).unwrap_or(form);
        if matches!(of.lang, Lang::Zh | Lang::Ja) {
            name.push_str(other);
        } else {
            name = format!("{} {other}", name.trim_end());
        }
    }
    Customer {
        id: format!("C{n:06}"),
        name,
        lang: of.lang,
        currency: of.currency,
        account: None,
        twin: Some(twin_of),
    }
}

/// An amount in the currency: log-uniform around 80 to 40,000 EUR.
fn amount(rng: &mut Rng, c: Currency) -> Decimal {
    let eur = 80.0 * (500.0f64).powf(rng.unit());
    let rate = match c.as_str() {
        "CNY" => 7.8,
        "JPY" => 160.0,
        "GBP" => 0.85,
        "CHF" => 0.95,
        "USD" => 1.08,
        _ => 1.0,
    };
    let minor = c.minor_units();
    let units = eur * rate * 10f64.powi(minor as i32);
    Decimal::new(units.round().max(1.0) as i64, minor)
}

/// The bank's rendering of a payer name.
fn bank_name(rng: &mut Rng, c: &Customer) -> String {
    let strip_legal = |name: &str| -> String {
        let forms = legal_forms(c.lang);
        match forms.iter().find(|f| name.ends_with(*f)) {
            Some(f) => name[..name.len() - f.len()].trim_end().to_owned(),
            None => name.to_owned(),
        }
    };
    if matches!(c.lang, Lang::Zh | Lang::Ja) {
        return match rng.below(6) {
            0..=3 => c.name.clone(),
            4 => strip_legal(&c.name),
            _ => {
                // Spaces between the parts, as some banks print them.
                let s = strip_legal(&c.name);
                let chars: Vec<char> = s.chars().collect();
                let mid = chars.len() / 2;
                format!(
                    "{} {}",
                    chars[..mid].iter().collect::<String>(),
                    chars[mid..].iter().collect::<String>()
                )
            }
        };
    }
    let fold = |s: &str| -> String {
        s.chars()
            .flat_map(|ch| match ch {
                'ä' => "ae".chars().collect::<Vec<_>>(),
                'ö' => "oe".chars().collect(),
                'ü' => "ue".chars().collect(),
                'ß' => "ss".chars().collect(),
                'Ä' => "AE".chars().collect(),
                'Ö' => "OE".chars().collect(),
                'Ü' => "UE".chars().collect(),
                'é' | 'è' | 'É' => "E".chars().collect(),
                'á' | 'à' => "a".chars().collect(),
                'í' => "i".chars().collect(),
                'ó' => "o".chars().collect(),
                'ś' => "s".chars().collect(),
                c => vec![c],
            })
            .collect()
    };
    match rng.below(20) {
        0..=5 => c.name.clone(),
        6..=10 => c.name.to_uppercase(),
        11..=14 => strip_legal(&c.name),
        15..=17 => fold(&c.name).to_uppercase(),
        // Truncated as by a 27-character name field.
        _ => fold(&c.name).to_uppercase().chars().take(27).collect(),
    }
}

/// The invoice number typed by someone else.
fn mangle(rng: &mut Rng, number: &str, rf: Option<&str>) -> String {
    // Numbers look like INV-2026-0001234.
    let mut parts = number.split('-').skip(1);
    let year = parts.next().unwrap_or("2026");
    let seq = parts.next().unwrap_or("0");
    let short = seq.trim_start_matches('0');
    let choices = if rf.is_some() { 11 } else { 10 };
    match rng.below(choices) {
        9 => {
            // A typo: two neighbouring digits swapped, or one digit wrong.
            // Invoice numbers are dense, so this usually names another
            // invoice that exists.
            let mut digits: Vec<u8> = seq.bytes().collect();
            let n = digits.len();
            if n >= 2 {
                let k = n - 1 - rng.below(n.min(4));
                if rng.chance(0.5) && k > 0 && digits[k] != digits[k - 1] {
                    digits.swap(k, k - 1);
                } else {
                    digits[k] = b'0' + ((digits[k] - b'0' + 1 + rng.below(9) as u8) % 10);
                }
            }
            format!("INV-{year}-{}", String::from_utf8_lossy(&digits))
        }
        0 => number.to_lowercase().replace('-', ""),
        1 => format!("Invoice {year}/{short}"),
        2 => format!("RE {year}-{seq}"),
        3 => format!("Rechnung Nr. {year} {seq}"),
        4 => format!("payment for invoice no {year}-{short} thx"),
        5 => format!("发票 {}", number.replace('-', "")),
        6 => format!("Rg.{year}.{seq} Kd.Nr. {}", 1000 + rng.below(9000)),
        7 => format!("INV {year} {seq}"),
        8 => format!("Fact. {}", number.to_lowercase()),
        _ => {
            // The RF reference typed in groups of four.
            let rf = rf.unwrap_or(number);
            let groups: Vec<String> = rf
                .as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            groups.join(" ")
        }
    }
}

fn clean_text(rng: &mut Rng, number: &str) -> String {
    match rng.below(4) {
        0 => number.to_owned(),
        1 => format!("Invoice {number}"),
        2 => format!("{number} Kundennr. {}", 10_000 + rng.below(90_000)),
        _ => format!("Rechnung {number}"),
    }
}

struct Builder {
    rng: Rng,
    customers: Vec<Customer>,
    receivables: Vec<Receivable>,
    receipts: Vec<Receipt>,
    labels: Vec<Label>,
    next_invoice: usize,
    width: usize,
    statement_start: NaiveDate,
}

impl Builder {
    fn booking_date(&mut self) -> NaiveDate {
        self.statement_start + Days::new(self.rng.below(28) as u64)
    }

    /// A new open invoice of customer `c`, issued before `before`.
    fn invoice(&mut self, c: usize, before: NaiveDate, amount: Option<Decimal>) -> usize {
        let cust = self.customers[c].clone();
        let seq = self.next_invoice;
        self.next_invoice += 1;
        let number = format!("INV-2026-{seq:0w$}", w = self.width);
        let total = amount.unwrap_or_else(|| self::amount(&mut self.rng, cust.currency));
        let issue = before - Days::new(1 + self.rng.below(90) as u64);
        let reference = self
            .rng
            .chance(0.5)
            .then(|| rf_reference(&format!("2026{seq:0w$}", w = self.width)));
        self.receivables.push(Receivable {
            invoice_number: number,
            customer_id: cust.id.clone(),
            customer_name: cust.name.clone(),
            payer_accounts: cust.account.iter().cloned().collect(),
            payer_names: Vec::new(),
            currency: cust.currency,
            total,
            open_amount: total,
            issue_date: Some(issue),
            due_date: Some(issue + Days::new(30)),
            reference,
        });
        self.receivables.len() - 1
    }

    fn customer(&mut self) -> usize {
        self.rng.below(self.customers.len())
    }

    /// Payer account and name for a receipt from customer `c`.
    fn payer(&mut self, c: usize) -> (Option<String>, Option<String>) {
        let cust = self.customers[c].clone();
        let account = match &cust.account {
            Some(a) if self.rng.chance(0.9) => Some(a.clone()),
            _ => Some(iban(&mut self.rng)),
        };
        let name = bank_name(&mut self.rng, &cust);
        (account, Some(name))
    }

    #[allow(clippy::too_many_arguments)]
    fn receipt(
        &mut self,
        date: NaiveDate,
        amount: Decimal,
        currency: Currency,
        payer: (Option<String>, Option<String>),
        remittance: Option<String>,
        creditor_reference: Option<String>,
        label: Label,
    ) {
        let n = self.receipts.len();
        let end_to_end_id = match self.rng.below(3) {
            0 => Some(format!(
                "E2E{:012}",
                self.rng.next_u64() % 1_000_000_000_000
            )),
            _ => None,
        };
        self.receipts.push(Receipt {
            id: format!("TX{n:08}"),
            booking_date: date,
            amount,
            currency,
            counterparty_account: payer.0,
            counterparty_name: payer.1,
            remittance,
            end_to_end_id,
            creditor_reference,
        });
        self.labels.push(label);
    }

    fn truth(&self, parts: &[(usize, Decimal)]) -> Vec<(String, Decimal)> {
        let mut t: Vec<(String, Decimal)> = parts
            .iter()
            .map(|&(i, a)| (self.receivables[i].invoice_number.clone(), a))
            .collect();
        t.sort();
        t
    }

    fn add(&mut self, kind: Kind) {
        let date = self.booking_date();
        match kind {
            Kind::Clean
            | Kind::MangledReference
            | Kind::NoReference
            | Kind::Partial
            | Kind::BankFee
            | Kind::Overpayment => {
                let c = self.customer();
                let ccy = self.customers[c].currency;
                let mut fee = Decimal::ZERO;
                let open = if kind == Kind::BankFee {
                    // Charges of 5 to 20 EUR-equivalent, on amounts large
                    // enough for them to be within 2 %.
                    fee = match ccy.as_str() {
                        "JPY" => Decimal::from(500 * (1 + self.rng.below(5))),
                        "CNY" => Decimal::new(2500 + 500 * self.rng.below(20) as i64, 2),
                        _ => Decimal::new(500 + 25 * self.rng.below(60) as i64, 2),
                    };
                    let a = amount(&mut self.rng, ccy);
                    a.max(fee * Decimal::from(60))
                } else {
                    amount(&mut self.rng, ccy)
                };
                let i = self.invoice(c, date, Some(open));
                let number = self.receivables[i].invoice_number.clone();
                let rf = self.receivables[i].reference.clone();
                let (paid, alloc) = match kind {
                    Kind::Partial => {
                        let share = 0.3 + 0.5 * self.rng.unit();
                        let minor = ccy.minor_units();
                        let p = (open * Decimal::from_f64_retain(share).unwrap_or(Decimal::ONE))
                            .round_dp(minor);
                        let p = p.max(Decimal::new(1, minor));
                        (p, p)
                    }
                    Kind::BankFee => (open - fee, open - fee),
                    Kind::Overpayment => {
                        let minor = ccy.minor_units();
                        let extra = (open * Decimal::new(1 + self.rng.below(50) as i64, 3))
                            .round_dp(minor)
                            .max(Decimal::new(1, minor));
                        (open + extra, open)
                    }
                    _ => (open, open),
                };
                let mut creditor_reference = None;
                let remittance = match kind {
                    Kind::NoReference => self
                        .rng
                        .chance(0.7)
                        .then(|| self.rng.pick(NO_REFERENCE_TEXTS).to_string()),
                    Kind::MangledReference => Some(mangle(&mut self.rng, &number, rf.as_deref())),
                    Kind::BankFee if self.rng.chance(0.2) => None,
                    _ => {
                        if rf.is_some() && self.rng.chance(0.4) {
                            creditor_reference = rf.clone();
                            None
                        } else if self.rng.chance(0.3) {
                            Some(mangle(&mut self.rng, &number, rf.as_deref()))
                        } else {
                            Some(clean_text(&mut self.rng, &number))
                        }
                    }
                };
                let payer = self.payer(c);
                let truth = self.truth(&[(i, alloc)]);
                self.receipt(
                    date,
                    paid,
                    ccy,
                    payer,
                    remittance,
                    creditor_reference,
                    Label {
                        kind,
                        truth,
                        identifiable: true,
                    },
                );
            }
            Kind::Combined => {
                let c = self.customer();
                let ccy = self.customers[c].currency;
                let n = 2 + self.rng.below(3);
                let items: Vec<usize> = (0..n).map(|_| self.invoice(c, date, None)).collect();
                let sum: Decimal = items.iter().map(|&i| self.receivables[i].open_amount).sum();
                let remittance = if self.rng.chance(0.5) {
                    let numbers: Vec<String> = items
                        .iter()
                        .map(|&i| self.receivables[i].invoice_number.clone())
                        .collect();
                    Some(if self.rng.chance(0.5) {
                        numbers.join(", ")
                    } else {
                        format!("Rechnungen {}", numbers.join(" "))
                    })
                } else {
                    self.rng
                        .chance(0.7)
                        .then(|| self.rng.pick(COMBINED_TEXTS).to_string())
                };
                let payer = self.payer(c);
                let parts: Vec<(usize, Decimal)> = items
                    .iter()
                    .map(|&i| (i, self.receivables[i].open_amount))
                    .collect();
                let truth = self.truth(&parts);
                self.receipt(
                    date,
                    sum,
                    ccy,
                    payer,
                    remittance,
                    None,
                    Label {
                        kind,
                        truth,
                        identifiable: true,
                    },
                );
            }
            Kind::Unrelated => {
                let payer_of = self.customer();
                let ccy = self.customers[payer_of].currency;
                let a = amount(&mut self.rng, ccy);
                let name = self.rng.pick(UNRELATED_PAYERS).to_string();
                let text = self.rng.pick(UNRELATED_TEXTS).to_string();
                let account = iban(&mut self.rng);
                self.receipt(
                    date,
                    a,
                    ccy,
                    (Some(account), Some(name)),
                    Some(text),
                    None,
                    Label {
                        kind,
                        truth: Vec::new(),
                        identifiable: true,
                    },
                );
            }
            Kind::LookAlike => {
                let c = self.customer();
                let twin = self.customers[c].twin;
                let ccy = self.customers[c].currency;
                let a = amount(&mut self.rng, ccy);
                let i = self.invoice(c, date, Some(a));
                match twin {
                    Some(t) if self.rng.chance(0.5) => {
                        // Two customers of the same name owe the same amount;
                        // the payment names neither invoice.
                        self.invoice(t, date, Some(a));
                        let name = bank_name(&mut self.rng, &self.customers[c].clone());
                        let truth = self.truth(&[(i, a)]);
                        let account = iban(&mut self.rng);
                        let text = self
                            .rng
                            .chance(0.5)
                            .then(|| self.rng.pick(NO_REFERENCE_TEXTS).to_string());
                        self.receipt(
                            date,
                            a,
                            ccy,
                            (Some(account), Some(name)),
                            text,
                            None,
                            Label {
                                kind,
                                truth,
                                identifiable: false,
                            },
                        );
                    }
                    _ => {
                        // Someone who owes nothing sends exactly an amount
                        // that is open, and sometimes a second customer owes
                        // it too.
                        if self.rng.chance(0.3) {
                            let other = self.customer();
                            if self.customers[other].currency == ccy {
                                self.invoice(other, date, Some(a));
                            }
                        }
                        let name = self.rng.pick(UNRELATED_PAYERS).to_string();
                        let account = iban(&mut self.rng);
                        let text = self
                            .rng
                            .chance(0.5)
                            .then(|| self.rng.pick(UNRELATED_TEXTS).to_string());
                        self.receipt(
                            date,
                            a,
                            ccy,
                            (Some(account), Some(name)),
                            text,
                            None,
                            Label {
                                kind,
                                truth: Vec::new(),
                                identifiable: true,
                            },
                        );
                    }
                }
            }
        }
    }
}

/// Share of each kind among the receipts, in [`Kind::ALL`] order (per
/// thousand).
const MIX: [u32; 9] = [300, 150, 150, 80, 60, 80, 40, 80, 60];

/// Generates a scenario. Receipts and receivables come out shuffled;
/// customers number about a third of the receipts, so most have several
/// open invoices, and a few percent are "twins" that share a name with
/// another customer.
pub fn generate(params: Params) -> Scenario {
    let mut rng = Rng::new(params.seed);
    let n_customers = (params.receipts / 3).max(30);
    let mut customers: Vec<Customer> = Vec::with_capacity(n_customers);
    for k in 0..n_customers {
        if k > 0 && rng.chance(0.03) {
            let of = rng.below(k);
            let twin = make_twin(&customers[of], k, of);
            customers[of].twin = Some(k);
            customers.push(twin);
        } else {
            customers.push(make_customer(&mut rng, k));
        }
    }
    let total_invoices = params.receivables.max(params.receipts * 2);
    let width = (total_invoices.to_string().len() + 1).max(6);
    let mut b = Builder {
        rng,
        customers,
        receivables: Vec::with_capacity(params.receivables.max(params.receipts)),
        receipts: Vec::with_capacity(params.receipts),
        labels: Vec::with_capacity(params.receipts),
        next_invoice: 1,
        width,
        statement_start: NaiveDate::from_ymd_opt(2026, 3, 1).unwrap_or_default(),
    };
    let total: u32 = MIX.iter().sum();
    for _ in 0..params.receipts {
        let mut x = b.rng.below(total as usize) as u32;
        let mut kind = Kind::Clean;
        for (k, &w) in Kind::ALL.iter().zip(MIX.iter()) {
            if x < w {
                kind = *k;
                break;
            }
            x -= w;
        }
        b.add(kind);
    }
    // Invoices nobody pays this time.
    while b.receivables.len() < params.receivables {
        let c = b.customer();
        let d = b.statement_start + Days::new(28);
        b.invoice(c, d, None);
    }
    let Builder {
        mut rng,
        mut receivables,
        receipts,
        labels,
        ..
    } = b;
    rng.shuffle(&mut receivables);
    let mut paired: Vec<(Receipt, Label)> = receipts.into_iter().zip(labels).collect();
    rng.shuffle(&mut paired);
    let (receipts, labels) = paired.into_iter().unzip();
    Scenario {
        receipts,
        labels,
        receivables,
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Writes receivables in the file-mode CSV layout (with the optional
/// `reference` column).
pub fn write_receivables_csv(receivables: &[Receivable], mut w: impl Write) -> io::Result<()> {
    writeln!(
        w,
        "invoice_number,customer_id,customer_name,customer_account,currency,amount_total,amount_open,issue_date,due_date,reference"
    )?;
    for r in receivables {
        let date = |d: Option<NaiveDate>| d.map(|d| d.to_string()).unwrap_or_default();
        writeln!(
            w,
            "{},{},{},{},{},{},{},{},{},{}",
            csv_field(&r.invoice_number),
            csv_field(&r.customer_id),
            csv_field(&r.customer_name),
            csv_field(&r.payer_accounts.join(";")),
            r.currency,
            r.total,
            r.open_amount,
            date(r.issue_date),
            date(r.due_date),
            csv_field(r.reference.as_deref().unwrap_or("")),
        )?;
    }
    w.flush()
}

/// Writes receipts in the file-mode statement CSV layout. The end-to-end id
/// and creditor reference have no column there; they are appended to the
/// reference text.
pub fn write_statement_csv(receipts: &[Receipt], mut w: impl Write) -> io::Result<()> {
    writeln!(
        w,
        "transaction_id,booking_date,amount,currency,counterparty_name,counterparty_account,reference"
    )?;
    for r in receipts {
        let mut reference = r.remittance.clone().unwrap_or_default();
        for extra in [&r.creditor_reference, &r.end_to_end_id]
            .into_iter()
            .flatten()
        {
            if !reference.is_empty() {
                reference.push(' ');
            }
            reference.push_str(extra);
        }
        writeln!(
            w,
            "{},{},{},{},{},{},{}",
            csv_field(&r.id),
            r.booking_date,
            r.amount,
            r.currency,
            csv_field(r.counterparty_name.as_deref().unwrap_or("")),
            csv_field(r.counterparty_account.as_deref().unwrap_or("")),
            csv_field(&reference),
        )?;
    }
    w.flush()
}

/// How the engine did on one kind of receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KindAccuracy {
    /// Receipts of the kind.
    pub receipts: usize,
    /// Receipts whose right allocation can be told from the data.
    pub with_match: usize,
    /// Matched automatically.
    pub auto: usize,
    /// Matched automatically and right.
    pub auto_correct: usize,
    /// Suggested.
    pub suggested: usize,
    /// Suggested, and the suggestion is right.
    pub suggested_correct: usize,
    /// Left open.
    pub open: usize,
}

impl KindAccuracy {
    /// Share of automatic matches that are right (1 when there are none).
    pub fn precision(&self) -> f64 {
        if self.auto == 0 {
            1.0
        } else {
            self.auto_correct as f64 / self.auto as f64
        }
    }

    /// Share of receipts with a right allocation that were matched
    /// automatically and rightly (1 when there are none).
    pub fn auto_rate(&self) -> f64 {
        if self.with_match == 0 {
            1.0
        } else {
            self.auto_correct as f64 / self.with_match as f64
        }
    }

    fn add(&mut self, o: &KindAccuracy) {
        self.receipts += o.receipts;
        self.with_match += o.with_match;
        self.auto += o.auto;
        self.auto_correct += o.auto_correct;
        self.suggested += o.suggested;
        self.suggested_correct += o.suggested_correct;
        self.open += o.open;
    }
}

/// Accuracy per kind of receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accuracy {
    /// One row per kind, in [`Kind::ALL`] order.
    pub rows: Vec<(Kind, KindAccuracy)>,
}

impl Accuracy {
    /// All kinds together.
    pub fn total(&self) -> KindAccuracy {
        let mut t = KindAccuracy::default();
        for (_, r) in &self.rows {
            t.add(r);
        }
        t
    }

    /// A plain-text table, one line per kind and a total.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<18} {:>8} {:>8} {:>8} {:>8} {:>10} {:>8} {:>10} {:>10}\n",
            "kind",
            "receipts",
            "matchable",
            "auto",
            "auto ok",
            "suggested",
            "open",
            "precision",
            "auto rate"
        );
        let line = |name: &str, r: &KindAccuracy| -> String {
            format!(
                "{:<18} {:>8} {:>8} {:>8} {:>8} {:>10} {:>8} {:>9.2}% {:>9.2}%\n",
                name,
                r.receipts,
                r.with_match,
                r.auto,
                r.auto_correct,
                r.suggested,
                r.open,
                100.0 * r.precision(),
                100.0 * r.auto_rate()
            )
        };
        for (k, r) in &self.rows {
            out += &line(k.as_str(), r);
        }
        out += &line("total", &self.total());
        out
    }
}

/// Compares a reconciliation of `scenario` with its labels. An allocation
/// is right when it names exactly the labelled invoices with the labelled
/// amounts; an automatic match of a receipt that pays nothing, or whose
/// invoice cannot be told from a look-alike's, is wrong.
pub fn accuracy(scenario: &Scenario, result: &super::Reconciliation) -> Accuracy {
    let mut rows: Vec<(Kind, KindAccuracy)> = Kind::ALL
        .iter()
        .map(|&k| (k, KindAccuracy::default()))
        .collect();
    for d in &result.decisions {
        let label = &scenario.labels[d.receipt];
        let row = &mut rows
            .iter_mut()
            .find(|(k, _)| *k == label.kind)
            .expect("every kind has a row")
            .1;
        let matchable = label.identifiable && !label.truth.is_empty();
        let mut got: Vec<(String, Decimal)> = d
            .allocations
            .iter()
            .map(|a| {
                (
                    scenario.receivables[a.invoice].invoice_number.clone(),
                    a.amount,
                )
            })
            .collect();
        got.sort();
        let right = matchable
            && got.len() == label.truth.len()
            && got
                .iter()
                .zip(&label.truth)
                .all(|(g, t)| g.0 == t.0 && g.1 == t.1);
        row.receipts += 1;
        row.with_match += usize::from(matchable);
        match d.status {
            super::Status::Auto => {
                row.auto += 1;
                row.auto_correct += usize::from(right);
            }
            super::Status::Suggested => {
                row.suggested += 1;
                row.suggested_correct += usize::from(right);
            }
            super::Status::Open => row.open += 1,
        }
    }
    Accuracy { rows }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_scenario() {
        let p = Params {
            seed: 7,
            receipts: 200,
            receivables: 300,
        };
        let a = generate(p);
        let b = generate(p);
        assert_eq!(a.receipts, b.receipts);
        assert_eq!(a.receivables, b.receivables);
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.receipts.len(), 200);
        assert!(a.receivables.len() >= 300);
        let c = generate(Params { seed: 8, ..p });
        assert_ne!(a.receipts, c.receipts);
    }

    #[test]
    fn generated_identifiers_are_valid() {
        for _ in 0..50 {
            let mut rng = Rng::new(3);
            let i = iban(&mut rng);
            assert!(crate::model::Iban::parse(&i).is_ok(), "{i}");
        }
        let rf = rf_reference("20260000123");
        assert!(super::super::normalize::is_valid_rf(&rf), "{rf}");
    }

    #[test]
    fn labels_point_at_existing_invoices() {
        let s = generate(Params {
            seed: 11,
            receipts: 500,
            receivables: 500,
        });
        let numbers: std::collections::HashSet<&str> = s
            .receivables
            .iter()
            .map(|r| r.invoice_number.as_str())
            .collect();
        assert_eq!(numbers.len(), s.receivables.len(), "numbers are unique");
        for l in &s.labels {
            for (n, a) in &l.truth {
                assert!(numbers.contains(n.as_str()));
                assert!(*a > Decimal::ZERO);
            }
        }
        for k in Kind::ALL {
            assert!(s.labels.iter().any(|l| l.kind == k), "{k:?} missing");
        }
    }
}
