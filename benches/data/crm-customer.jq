# The jq equivalent of benches/data/crm-customer.in.toml, for the
# end-to-end comparison in benches/mapping_vs_jq.sh.
def trim: sub("^\\s+"; "") | sub("\\s+$"; "");
def collapse: [splits("\\s+")] | map(select(length > 0)) | join(" ");
def status: {"A": "active", "I": "inactive", "P": "prospect"}[.] // "unknown";
def country: ({"deutschland": "DE", "germany": "DE", "de": "DE", "österreich": "AT", "austria": "AT",
  "schweiz": "CH", "switzerland": "CH", "france": "FR", "united kingdom": "GB", "china": "CN", "中国": "CN"}
  [ascii_downcase]) // .;
def segment: {"1": "enterprise", "2": "mid-market", "3": "smb"}[.] // error("segment \(.) is not in the table");
def de_date: capture("^(?<d>\\d{2})\\.(?<m>\\d{2})\\.(?<y>\\d{4})$") | "\(.y)-\(.m)-\(.d)";
def de_decimal: gsub("\\."; "") | sub(","; ".");
def bool: ascii_downcase | IN("true", "ja", "yes", "1");
{
  name: ((.company_name // .legal_name) | trim | collapse),
  legal_name: (.legal_name | trim),
  tax_id: (.vat_id | trim | ascii_upcase | gsub("[^A-Z0-9]"; "")),
  email: (.email | trim | ascii_downcase),
  phone: (.phone | trim),
  currency: (.currency | trim | ascii_upcase),
  status: (.status | status),
  billing: {
    line1: (.address.street | trim),
    city: (.address.city | trim),
    postal_code: (.address.zip | trim),
    country: (.address.country | country)
  },
  shipping: { city: (.shipping.city | trim), country: (.shipping.country | country) },
  segment: (.segment | segment),
  customer_since: (.created | de_date),
  annual_revenue: (.revenue | de_decimal),
  owner: (.owner.email | ascii_downcase),
  website: (.website | trim | ascii_downcase),
  industry: (.industry | trim),
  employees: .employees,
  crm_id: (.id | tostring),
  source: "crm",
  language: (.language // "de"),
  newsletter: (.newsletter | bool),
  notes: (.notes | collapse)
}
