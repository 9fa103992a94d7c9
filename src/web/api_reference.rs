//! The API reference as a page of the web app, rendered on the server from the same OpenAPI
//! document `/api/v1/openapi.json` serves: nothing is fetched from a CDN and nothing is built
//! with Node, so the page works offline and can never drift from the API it describes.
//!
//! The document is read as JSON rather than through utoipa's types: the JSON is the contract
//! API users see, and walking it keeps this page independent of utoipa's internal shapes.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::Value;

use crate::error::Result;
use crate::state::AppState;
use crate::web::Page;
use crate::web::access::AgencyPage;
use crate::web::session::Viewer;
use crate::web::view::{Chrome, page as render};

/// The methods an OpenAPI path item may hold, in the order the page lists them.
const METHODS: [&str; 8] = ["get", "post", "put", "patch", "delete", "head", "options", "trace"];

/// The reference, built once from the document at start-up.
#[derive(Debug)]
pub struct Reference {
    pub title: String,
    pub description: String,
    pub groups: Vec<Group>,
    pub schemas: Vec<Schema>,
}

/// The operations of one tag.
#[derive(Debug)]
pub struct Group {
    pub tag: String,
    pub description: String,
    pub operations: Vec<Operation>,
}

#[derive(Debug)]
pub struct Operation {
    /// `GET`, `POST`, ...
    pub method: String,
    pub path: String,
    /// A fragment id, unique per method and path.
    pub anchor: String,
    pub summary: String,
    pub description: String,
    pub parameters: Vec<Parameter>,
    /// The request body's media type and schema, when there is one.
    pub request: Option<Body>,
    pub responses: Vec<Answer>,
    /// Who may call it, in words.
    pub auth: String,
}

#[derive(Debug)]
pub struct Parameter {
    pub name: String,
    /// `path`, `query`, `header`, `cookie`.
    pub location: String,
    pub kind: String,
    pub required: bool,
    pub description: String,
}

#[derive(Debug)]
pub struct Body {
    pub media_type: String,
    pub schema: TypeName,
}

#[derive(Debug)]
pub struct Answer {
    pub status: String,
    pub description: String,
    pub body: Option<Body>,
}

/// A type as the page shows it, linked to its schema when it is a named one.
#[derive(Debug, Clone)]
pub struct TypeName {
    pub text: String,
    /// The named schema it refers to (for the link), if any.
    pub schema: Option<String>,
}

#[derive(Debug)]
pub struct Schema {
    pub name: String,
    pub description: String,
    pub fields: Vec<Field>,
    /// For enums and other schemas without fields: what values it takes.
    pub summary: Option<String>,
}

#[derive(Debug)]
pub struct Field {
    pub name: String,
    pub kind: TypeName,
    pub required: bool,
    pub description: String,
}

impl Reference {
    /// Reads an OpenAPI 3 document (as JSON) into the page's shape.
    pub fn from_document(document: &Value) -> Reference {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let default_auth = auth_words(&document["security"], &document["components"]["securitySchemes"]);
        let mut groups: BTreeMap<String, Vec<Operation>> = BTreeMap::new();
        if let Some(paths) = document["paths"].as_object() {
            for (path, item) in paths {
                for method in METHODS {
                    let Some(op) = item.get(method).filter(|op| op.is_object()) else { continue };
                    let tag = op["tags"][0].as_str().unwrap_or("other").to_owned();
                    let auth = match op.get("security") {
                        Some(security) => auth_words(security, &document["components"]["securitySchemes"]),
                        None => default_auth.clone(),
                    };
                    groups.entry(tag).or_default().push(Operation {
                        method: method.to_uppercase(),
                        path: path.clone(),
                        anchor: anchor(method, path),
                        summary: text(&op["summary"]),
                        description: text(&op["description"]),
                        parameters: parameters(&op["parameters"]),
                        request: body(&op["requestBody"]),
                        responses: responses(&op["responses"]),
                        auth,
                    });
                }
            }
        }
        // Tags in the document's order (it is the API's table of contents), then any others.
        let mut ordered = Vec::new();
        for tag in document["tags"].as_array().into_iter().flatten() {
            let name = text(&tag["name"]);
            if let Some(operations) = groups.remove(&name) {
                ordered.push(Group { tag: name, description: text(&tag["description"]), operations });
            }
        }
        ordered.extend(groups.into_iter().map(|(tag, operations)| Group {
            tag,
            description: String::new(),
            operations,
        }));
        let schemas = document["components"]["schemas"]
            .as_object()
            .map(|schemas| schemas.iter().map(|(name, schema)| schema_of(name, schema)).collect())
            .unwrap_or_default();
        Reference {
            title: text(&document["info"]["title"]),
            description: text(&document["info"]["description"]),
            groups: ordered,
            schemas,
        }
    }

    pub fn operation_count(&self) -> usize {
        self.groups.iter().map(|g| g.operations.len()).sum()
    }
}

/// `get-/api/v1/agencies/{agency}` as a fragment id: letters, digits and dashes only.
pub fn anchor(method: &str, path: &str) -> String {
    let mut id = format!("op-{}", method.to_lowercase());
    for c in path.chars() {
        if c.is_ascii_alphanumeric() {
            id.push(c);
        } else if !id.ends_with('-') {
            id.push('-');
        }
    }
    id.trim_end_matches('-').to_owned()
}

fn parameters(list: &Value) -> Vec<Parameter> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|p| Parameter {
            name: p["name"].as_str().unwrap_or_default().to_owned(),
            location: p["in"].as_str().unwrap_or_default().to_owned(),
            kind: type_name(&p["schema"]).text,
            required: p["required"].as_bool().unwrap_or(false),
            description: p["description"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

fn body(request: &Value) -> Option<Body> {
    let (media_type, content) = request["content"].as_object()?.iter().next()?;
    Some(Body { media_type: media_type.clone(), schema: type_name(&content["schema"]) })
}

fn responses(responses: &Value) -> Vec<Answer> {
    responses
        .as_object()
        .into_iter()
        .flatten()
        .map(|(status, answer)| Answer {
            status: status.clone(),
            description: answer["description"].as_str().unwrap_or_default().to_owned(),
            body: body(answer),
        })
        .collect()
}

/// A schema as a short type: `ClientView`, `array of ClientView`, `string (uuid)`, `A | B`.
fn type_name(schema: &Value) -> TypeName {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap_or(reference).to_owned();
        return TypeName { text: name.clone(), schema: Some(name) };
    }
    for combinator in ["oneOf", "anyOf", "allOf"] {
        if let Some(options) = schema[combinator].as_array() {
            let named: Vec<TypeName> =
                options.iter().map(type_name).filter(|t| !t.text.is_empty() && t.text != "null").collect();
            let nullable = options.len() > named.len();
            let text = named.iter().map(|t| t.text.as_str()).collect::<Vec<_>>().join(" | ");
            let schema = named.iter().find_map(|t| t.schema.clone());
            let text = if nullable { format!("{text} or null") } else { text };
            return TypeName { text, schema };
        }
    }
    let kind = match &schema["type"] {
        Value::String(kind) => kind.clone(),
        // OpenAPI 3.1 writes a nullable type as ["string", "null"].
        Value::Array(kinds) => {
            let named: Vec<&str> = kinds.iter().filter_map(Value::as_str).filter(|k| *k != "null").collect();
            let nullable = named.len() < kinds.len();
            let text = named.join(" | ");
            if nullable { format!("{text} or null") } else { text }
        }
        _ => String::new(),
    };
    if kind.starts_with("array") {
        let item = type_name(&schema["items"]);
        return TypeName { text: format!("{kind} of {}", item.text), schema: item.schema };
    }
    let text = match schema["format"].as_str() {
        Some(format) => format!("{kind} ({format})"),
        None if kind.is_empty() && schema.get("enum").is_some() => "string".to_owned(),
        None if kind.is_empty() => "any".to_owned(),
        None => kind,
    };
    TypeName { text, schema: None }
}

fn schema_of(name: &str, schema: &Value) -> Schema {
    let required: Vec<&str> =
        schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let fields = schema["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(field, property)| Field {
            name: field.clone(),
            kind: type_name(property),
            required: required.contains(&field.as_str()),
            description: property["description"].as_str().unwrap_or_default().to_owned(),
        })
        .collect::<Vec<_>>();
    let summary = if fields.is_empty() {
        match schema["enum"].as_array() {
            Some(values) => Some(format!(
                "one of: {}",
                values
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            None => Some(type_name(schema).text),
        }
    } else {
        None
    };
    Schema {
        name: name.to_owned(),
        description: schema["description"].as_str().unwrap_or_default().to_owned(),
        fields,
        summary,
    }
}

/// A security requirement list in words: each entry is one way in.
fn auth_words(security: &Value, schemes: &Value) -> String {
    let ways: Vec<String> = security
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|requirement| {
            let names: Vec<&String> = requirement.as_object()?.keys().collect();
            if names.is_empty() {
                return None;
            }
            Some(
                names
                    .iter()
                    .map(|name| scheme_words(name, &schemes[name.as_str()]))
                    .collect::<Vec<_>>()
                    .join(" and "),
            )
        })
        .collect();
    if ways.is_empty() { "None: anyone may call it".to_owned() } else { ways.join(", or ") }
}

fn scheme_words(name: &str, scheme: &Value) -> String {
    match (scheme["type"].as_str(), scheme["scheme"].as_str(), scheme["in"].as_str()) {
        (Some("http"), Some("bearer"), _) => "an API key (Authorization: Bearer ppk_...)".to_owned(),
        (Some("apiKey"), _, Some("cookie")) => {
            format!(
                "the session cookie {} (changes also need x-csrf-token)",
                scheme["name"].as_str().unwrap_or(name)
            )
        }
        _ => name.to_owned(),
    }
}

#[derive(Template)]
#[template(path = "api_reference.html")]
struct ReferencePage<'a> {
    chrome: Chrome,
    reference: &'a Reference,
}

/// `/app/agencies/{agency}/api`, and `/app/api` leading to the first agency's, describing
/// `document` (the API's own OpenAPI document).
pub fn router(document: &utoipa::openapi::OpenApi) -> Router<AppState> {
    let json = serde_json::to_value(document).unwrap_or_else(|error| {
        tracing::error!(%error, "the OpenAPI document does not serialise; the API reference page is empty");
        Value::Null
    });
    let reference = Arc::new(Reference::from_document(&json));
    Router::new()
        .route("/app/api", get(first_agency))
        .route("/app/agencies/{agency}/api", get(page))
        .layer(Extension(reference))
}

async fn first_agency(State(state): State<AppState>, viewer: Viewer) -> Response {
    match viewer.agencies(&state).await {
        Ok(agencies) => match agencies.first() {
            Some(agency) => Redirect::to(&format!("/app/agencies/{}/api", agency.id)).into_response(),
            None => Redirect::to("/app").into_response(),
        },
        Err(error) => crate::web::error_page(error).into_response(),
    }
}

async fn page(
    State(state): State<AppState>,
    Extension(reference): Extension<Arc<Reference>>,
    AgencyPage { viewer, agency, .. }: AgencyPage,
) -> Response {
    let rendered = async {
        let chrome = Chrome::new(&state, &viewer, Some(agency), "api-keys").await?;
        Ok::<_, crate::error::Error>(Page::render(
            StatusCode::OK,
            &ReferencePage { chrome, reference: &reference },
        ))
    };
    render(rendered.await as Result<Page>)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn anchors_are_plain_and_distinct_per_method() {
        assert_eq!(anchor("get", "/api/v1/agencies/{agency}"), "op-get-api-v1-agencies-agency");
        assert_ne!(anchor("get", "/a/{b}"), anchor("post", "/a/{b}"));
    }

    #[test]
    fn operations_keep_their_auth_parameters_and_schemas() {
        let document = json!({
            "info": {"title": "t", "description": "d"},
            "security": [{"api_key": []}],
            "tags": [{"name": "x", "description": "The x"}],
            "paths": {"/x/{id}": {
                "get": {"tags": ["x"], "summary": "Read x",
                        "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}],
                        "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/X"}}}}}},
                "post": {"tags": ["x"], "security": [{}], "responses": {}}
            }},
            "components": {
                "securitySchemes": {"api_key": {"type": "http", "scheme": "bearer"}},
                "schemas": {"X": {"type": "object", "required": ["a"], "properties": {"a": {"type": ["string", "null"]}, "b": {"type": "array", "items": {"$ref": "#/components/schemas/Y"}}}}}
            }
        });
        let reference = Reference::from_document(&document);
        assert_eq!(reference.operation_count(), 2);
        let get = &reference.groups[0].operations[0];
        assert_eq!(get.parameters[0].kind, "string (uuid)");
        assert!(get.auth.contains("API key"), "{}", get.auth);
        assert_eq!(get.responses[0].body.as_ref().unwrap().schema.schema.as_deref(), Some("X"));
        assert!(reference.groups[0].operations[1].auth.starts_with("None"));
        let fields = &reference.schemas[0].fields;
        assert_eq!((fields[0].kind.text.as_str(), fields[0].required), ("string or null", true));
        assert_eq!(fields[1].kind.text, "array of Y");
    }
}
