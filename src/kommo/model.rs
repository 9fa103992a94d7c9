//! Kommo's shapes, read leniently: the API is documented loosely and values vary in type.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::LeadId;

/// `GET /api/v4/account`.
#[derive(Debug, Clone, Deserialize)]
pub struct Account {
    pub id: i64,
    #[serde(default)]
    pub name: String,
    pub subdomain: String,
    #[serde(default)]
    pub currency: Option<String>,
}

/// The parts of a lead pipepay uses.
#[derive(Debug, Clone)]
pub struct Lead {
    pub id: LeadId,
    pub name: String,
    pub pipeline_id: i64,
    pub status_id: i64,
    /// Exact price: `price_with_minor_units` when Kommo sends it, else the integer `price`.
    pub price: Decimal,
    /// Contact ids, the main contact first.
    pub contact_ids: Vec<i64>,
    pub custom_fields: Vec<FieldValue>,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldValue {
    pub field_id: i64,
    pub values: Vec<String>,
}

/// A contact's name and how to reach them.
#[derive(Debug, Clone, Default)]
pub struct Contact {
    pub id: i64,
    pub name: String,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Pipeline {
    pub id: i64,
    pub name: String,
    pub stages: Vec<Stage>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Stage {
    pub id: i64,
    pub name: String,
    pub pipeline_id: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CustomField {
    pub id: i64,
    pub name: String,
    #[serde(rename = "type")]
    pub field_type: String,
}

/// An integer that may arrive as a number or a string.
fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.to_string().parse::<Decimal>().ok().and_then(|d| d.trunc().try_into().ok())),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A decimal from a JSON number or string, exactly (the number's text, never an f64).
pub fn decimal(value: &Value) -> Option<Decimal> {
    match value {
        Value::Number(n) => {
            let text = n.to_string();
            text.parse().ok().or_else(|| Decimal::from_scientific(&text).ok())
        }
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn field_values(values: &Value) -> Vec<FieldValue> {
    values
        .as_array()
        .map(|fields| {
            fields
                .iter()
                .filter_map(|f| {
                    let field_id = int(&f["field_id"])?;
                    let values = f["values"]
                        .as_array()
                        .map(|vs| vs.iter().filter_map(|v| text(&v["value"]).or_else(|| text(v))).collect())
                        .unwrap_or_default();
                    Some(FieldValue { field_id, values })
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Lead {
    pub fn from_json(lead: &Value) -> Option<Lead> {
        let price = lead
            .get("price_with_minor_units")
            .and_then(decimal)
            .or_else(|| lead.get("price").and_then(decimal))
            .unwrap_or(Decimal::ZERO);
        let mut contacts: Vec<(bool, i64)> = lead["_embedded"]["contacts"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| {
                        let main = matches!(&c["is_main"], Value::Bool(true))
                            || matches!(&c["is_main"], Value::String(s) if s == "true" || s == "1");
                        Some((main, int(&c["id"])?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        // The main contact first; the rest in Kommo's order.
        contacts.sort_by_key(|(main, _)| !*main);
        Some(Lead {
            id: LeadId(int(&lead["id"])?),
            name: text(&lead["name"]).unwrap_or_default(),
            pipeline_id: int(&lead["pipeline_id"])?,
            status_id: int(&lead["status_id"])?,
            price,
            contact_ids: contacts.into_iter().map(|(_, id)| id).collect(),
            custom_fields: field_values(&lead["custom_fields_values"]),
            updated_at: int(&lead["updated_at"]).unwrap_or(0),
        })
    }

    /// The first value of a custom field, if set.
    pub fn field(&self, field_id: i64) -> Option<&str> {
        self.custom_fields
            .iter()
            .find(|f| f.field_id == field_id)
            .and_then(|f| f.values.first())
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }
}

impl Contact {
    pub fn from_json(contact: &Value) -> Option<Contact> {
        let mut found = Contact {
            id: int(&contact["id"])?,
            name: text(&contact["name"]).unwrap_or_default(),
            ..Contact::default()
        };
        for field in contact["custom_fields_values"].as_array().into_iter().flatten() {
            let code = field["field_code"].as_str().unwrap_or_default();
            // Values carry `enum_code` (the SDK) or `enum` (the amoCRM docs); neither matters
            // here, only the value, so both shapes read the same.
            let values = field["values"]
                .as_array()
                .map(|vs| vs.iter().filter_map(|v| text(&v["value"])).map(|v| v.trim().to_owned()).collect())
                .unwrap_or_else(Vec::new);
            match code {
                "EMAIL" => found.emails.extend(values.into_iter().filter(|v| !v.is_empty())),
                "PHONE" => found.phones.extend(values.into_iter().filter(|v| !v.is_empty())),
                _ => {}
            }
        }
        Some(found)
    }
}

pub fn pipelines_from_json(body: &Value) -> Vec<Pipeline> {
    body["_embedded"]["pipelines"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    let id = int(&p["id"])?;
                    let stages = p["_embedded"]["statuses"]
                        .as_array()
                        .map(|ss| {
                            ss.iter()
                                .filter_map(|s| {
                                    Some(Stage {
                                        id: int(&s["id"])?,
                                        name: text(&s["name"]).unwrap_or_default(),
                                        pipeline_id: id,
                                    })
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    Some(Pipeline { id, name: text(&p["name"]).unwrap_or_default(), stages })
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn custom_fields_from_json(body: &Value) -> Vec<CustomField> {
    body["_embedded"]["custom_fields"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .filter_map(|f| {
                    Some(CustomField {
                        id: int(&f["id"])?,
                        name: text(&f["name"]).unwrap_or_default(),
                        field_type: text(&f["type"]).unwrap_or_default(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lead_prefers_the_exact_price_and_puts_the_main_contact_first() {
        let lead: Value = serde_json::from_str(
            r#"{"id":152464,"name":"Order #1042","price":1234,"price_with_minor_units":1234.56,
                "status_id":58141807,"pipeline_id":6950551,"updated_at":1686748504,
                "custom_fields_values":[{"field_id":184994,"values":[{"value":"https://pay.example/abc"}]}],
                "_embedded":{"contacts":[{"id":7767065,"is_main":false},{"id":7143599,"is_main":true}]}}"#,
        )
        .unwrap();
        let lead = Lead::from_json(&lead).unwrap();
        assert_eq!(lead.price, "1234.56".parse::<Decimal>().unwrap());
        assert_eq!(lead.contact_ids, [7143599, 7767065]);
        assert_eq!(lead.field(184994), Some("https://pay.example/abc"));
    }

    #[test]
    fn contacts_read_email_and_phone_in_either_enum_spelling() {
        let contact: Value = serde_json::from_str(
            r#"{"id":1,"name":"Jane Doe","custom_fields_values":[
                {"field_id":3,"field_code":"PHONE","values":[{"value":"+254700000001","enum_code":"WORK"}]},
                {"field_id":5,"field_code":"EMAIL","values":[{"value":" jane@example.com ","enum":"WORK"}]}]}"#,
        )
        .unwrap();
        let contact = Contact::from_json(&contact).unwrap();
        assert_eq!(contact.emails, ["jane@example.com"]);
        assert_eq!(contact.phones, ["+254700000001"]);
        let bare: Value =
            serde_json::from_str(r#"{"id":"2","name":"No fields","custom_fields_values":null}"#).unwrap();
        assert!(Contact::from_json(&bare).unwrap().emails.is_empty());
    }
}
