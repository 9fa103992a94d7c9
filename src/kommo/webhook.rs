//! Kommo's account webhooks, read into lead events. Kommo posts them form-encoded, with PHP
//! bracket keys (`leads[status][0][custom_fields][1][values][0]`) and the old v2 entity shape
//! (kommo.md §3, §7). Pure: bytes in, values out.
//!
//! The bracket keys are rebuilt into a tree the way PHP's `$_POST` would be, with the same
//! "last one wins" rule, but without PHP's quirks that cost memory: numeric indices stay map
//! keys (a hostile `leads[status][999999999][id]` is one entry, not a gigabyte vector), keys
//! nested deeper than [`MAX_DEPTH`] are dropped, and only `account[...]` and `leads[...]` are
//! kept. Maps are hashed with std's randomly seeded hasher, so keys cannot be crafted to
//! collide: the work grows with the body's length (times a log factor for sorting indices and
//! for `raw`'s ordered JSON objects), never quadratically.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;
use sha2::{Digest, Sha256};
use url::form_urlencoded;

/// Kommo's deepest key is `leads[status][0][custom_fields][0][values][0][value]`, 8 levels;
/// anything twice as deep is not Kommo's, and the cap bounds what one key can cost.
const MAX_DEPTH: usize = 16;

/// How much of an unreadable value a note quotes: enough to recognise it, not enough to let a
/// hostile body fill the log.
const QUOTE_CHARS: usize = 40;

/// Where an event's modification time is read from, best first. Account hooks carry
/// `last_modified`, and `updated_at` holds the same time in the documented example (kommo.md
/// §7); creation times are the last resort so that `leads[add]` events still get one.
const MODIFIED_AT_KEYS: [&str; 4] = ["last_modified", "updated_at", "date_create", "created_at"];

/// One Kommo account webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// `account[id]`, the only trustworthy tenant check on an unsigned hook (kommo.md §3).
    pub account_id: Option<i64>,
    /// `account[subdomain]`, trimmed; `None` when absent or blank.
    pub subdomain: Option<String>,
    /// Every entity under every `leads[{action}]`, actions in the order they first appear in the
    /// body, entities by numeric index within an action (other indices after, as they came).
    pub leads: Vec<LeadEvent>,
    /// What could not be read, one line each, for the log: lead entities without a usable id or
    /// that are not entities at all (the others are still read), and the number of keys nested
    /// deeper than [`MAX_DEPTH`]. Other entities
    /// (`contacts[...]`, `unsorted[...]`, `talk[...]`) are not listed: they are other events
    /// pipepay did not ask about, not faults.
    pub skipped: Vec<String>,
}

/// One lead event from a Kommo account webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadEvent {
    pub action: LeadAction,
    pub lead_id: i64,
    pub status_id: Option<i64>,
    pub old_status_id: Option<i64>,
    pub pipeline_id: Option<i64>,
    /// `last_modified` (falling back to `updated_at`, then `date_create`/`created_at`), unix
    /// seconds as sent.
    pub modified_at: Option<i64>,
    /// Every field of this entity, decoded into nested JSON with string leaves exactly as sent
    /// (`custom_fields`, `tags` ... included), for the record. A map whose keys are exactly
    /// `0..n` becomes an array; any other map stays an object, so a radiobutton's `values`
    /// object or a list with a gap reads as an object keyed by index.
    pub raw: Value,
}

/// Which `leads[...]` block an event came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeadAction {
    /// `leads[status]`: the lead changed stage.
    Status,
    /// `leads[add]`: the lead was created.
    Add,
    /// Any other block (`update`, `delete`, `restore`, `responsible`, ...), kept so the caller
    /// decides what it means.
    Other(String),
}

impl LeadAction {
    fn from_key(key: String) -> LeadAction {
        match key.as_str() {
            "status" => LeadAction::Status,
            "add" => LeadAction::Add,
            _ => LeadAction::Other(key),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            LeadAction::Status => "status",
            LeadAction::Add => "add",
            LeadAction::Other(name) => name,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A form body is ASCII with escapes; raw bytes that are not even UTF-8 did not come from
    /// Kommo. (Escapes that decode to invalid UTF-8 only spoil their own value, as U+FFFD.)
    #[error("the webhook body is not UTF-8 text (invalid byte at offset {valid_up_to})")]
    NotUtf8 { valid_up_to: usize },
    #[error("the webhook body has neither account[...] nor leads[...] keys, so it is not a Kommo hook")]
    NotAWebhook,
    /// The tenant check rests on `account[id]`, so one that is there but unreadable fails the
    /// whole body rather than reading as "no account".
    #[error("the webhook's account[id] is not an integer: {0}")]
    AccountId(String),
}

/// Parses a Kommo webhook body.
///
/// Repeated keys: the last one wins, also between a value and a nested key at the same place
/// (`a=1&a[b]=2` gives `{"a":{"b":"2"}}`, the reverse order gives `{"a":"1"}`), as in PHP.
/// A key whose brackets do not close keeps the rest literally as one last key
/// (`leads[status][0][name=x` sets the field `[name`). `[]` appends, as in PHP.
pub fn parse(body: &[u8]) -> Result<Webhook, ParseError> {
    std::str::from_utf8(body).map_err(|e| ParseError::NotUtf8 { valid_up_to: e.valid_up_to() })?;
    let mut root = Branch::default();
    let mut too_deep = 0usize;
    for (key, value) in form_urlencoded::parse(body) {
        let name = key.split('[').next().unwrap_or_default();
        if name != "account" && name != "leads" {
            continue;
        }
        match split_key(&key) {
            Some(path) => root.insert(&path, value.into_owned()),
            None => too_deep += 1,
        }
    }

    let (mut account, mut leads) = (None, None);
    for (name, node) in root.entries {
        match name.as_str() {
            "account" => account = Some(node),
            "leads" => leads = Some(node),
            _ => {}
        }
    }
    if account.is_none() && leads.is_none() {
        return Err(ParseError::NotAWebhook);
    }

    let (account_id, subdomain) = match &account {
        Some(Node::Branch(account)) => (account_id(account)?, account.leaf("subdomain").map(str::trim)),
        _ => (None, None),
    };
    let mut webhook = Webhook {
        account_id,
        subdomain: subdomain.filter(|s| !s.is_empty()).map(str::to_owned),
        leads: Vec::new(),
        skipped: Vec::new(),
    };
    if too_deep > 0 {
        webhook.skipped.push(format!("{too_deep} key(s) nested deeper than {MAX_DEPTH} levels"));
    }
    if let Some(leads) = leads {
        read_leads(leads, &mut webhook);
    }
    Ok(webhook)
}

impl LeadEvent {
    /// The per-tenant deduplication key: action, lead, stage, the stage it left, modification
    /// time and a digest of the entity as sent, e.g.
    /// "kommo:status:30307415:142:41893093:1689281821:1f0c2a9e3b4d5c6e". Kommo repeats a
    /// delivery with the same body, so a repeat gives the same key. Kommo's times are whole
    /// seconds, so a time alone cannot tell apart changes within one second: trigger, lost and
    /// trigger again share lead, stage and time with the first move, but not the stage left
    /// (`old_status_id`); two edits in one second (a price, then a currency field) differ in
    /// their fields, hence the digest. A missing value shows as `-`. What stays the same is only
    /// a change that repeats another in every field within the same second (trigger, lost,
    /// trigger, lost, trigger): its job would find the lead as the first one did.
    pub fn dedup_key(&self) -> String {
        // The action is the only free text, and the fields after it never hold a colon, so two
        // different events cannot spell the same key.
        let or_dash = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let digest = Sha256::digest(self.raw.to_string().as_bytes());
        format!(
            "kommo:{}:{}:{}:{}:{}:{}",
            self.action.as_str(),
            self.lead_id,
            or_dash(self.status_id),
            or_dash(self.old_status_id),
            or_dash(self.modified_at),
            hex::encode(&digest[..8])
        )
    }
}

fn account_id(account: &Branch) -> Result<Option<i64>, ParseError> {
    match account.get("id") {
        None => Ok(None),
        // Blank reads as absent, like every other empty value; the caller's tenant check then
        // fails on `None` rather than on a parse error.
        Some(Node::Leaf(id)) if id.trim().is_empty() => Ok(None),
        Some(Node::Leaf(id)) => id.trim().parse().map(Some).map_err(|_| ParseError::AccountId(quote(id))),
        Some(Node::Branch(_)) => Err(ParseError::AccountId("a nested value".to_owned())),
    }
}

fn read_leads(leads: Node, webhook: &mut Webhook) {
    let Node::Branch(actions) = leads else {
        webhook.skipped.push("leads: a plain value, not a list of entities".to_owned());
        return;
    };
    for (action, entities) in actions.entries {
        let Node::Branch(entities) = entities else {
            let action = shown(&action);
            webhook.skipped.push(format!("leads[{action}]: a plain value, not a list of entities"));
            continue;
        };
        let mut entities = entities.entries;
        // Stable, so indices that are not numbers keep their order after the numbered ones.
        entities.sort_by_key(|(index, _)| list_index(index).map_or((1, 0), |i| (0, i)));
        for (index, entity) in entities {
            match lead_event(&action, entity) {
                Ok(event) => webhook.leads.push(event),
                Err(why) => {
                    webhook.skipped.push(format!("leads[{}][{}]: {why}", shown(&action), shown(&index)))
                }
            }
        }
    }
}

fn lead_event(action: &str, entity: Node) -> Result<LeadEvent, String> {
    let Node::Branch(fields) = entity else {
        return Err("a plain value, not an entity".to_owned());
    };
    let lead_id = match fields.get("id") {
        None => return Err("no id".to_owned()),
        Some(Node::Branch(_)) => return Err("the id is a nested value".to_owned()),
        // Kommo ids are positive; zero or below could never be fetched or moved.
        Some(Node::Leaf(id)) => match id.trim().parse::<i64>() {
            Ok(id) if id > 0 => id,
            _ => return Err(format!("the id {} is not a positive integer", quote(id))),
        },
    };
    Ok(LeadEvent {
        action: LeadAction::from_key(action.to_owned()),
        lead_id,
        status_id: fields.int("status_id"),
        old_status_id: fields.int("old_status_id"),
        pipeline_id: fields.int("pipeline_id"),
        modified_at: MODIFIED_AT_KEYS.iter().find_map(|key| fields.int(key)),
        raw: fields.into_json(),
    })
}

/// A piece of the body fit for a log line: escaped, so a key cannot forge a line break, and
/// cut short.
fn shown(text: &str) -> String {
    let mut out: String = text.chars().take(QUOTE_CHARS).flat_map(char::escape_debug).collect();
    if text.chars().nth(QUOTE_CHARS).is_some() {
        out.push('…');
    }
    out
}

fn quote(text: &str) -> String {
    format!("\"{}\"", shown(text))
}

/// One step of a bracket key.
#[derive(Debug, PartialEq, Eq)]
enum Segment<'a> {
    Key(&'a str),
    /// `[]`: the next index, as PHP appends.
    Append,
}

/// Splits `a[b][][c]` into `a`, `b`, append, `c`, or `None` when deeper than [`MAX_DEPTH`].
/// What does not continue as `[...]` (an unclosed `[`, text after a `]`) is one last literal
/// key. Each byte is looked at once, so a key of a million brackets costs a million steps.
fn split_key(key: &str) -> Option<Vec<Segment<'_>>> {
    let (name, mut rest) = key.split_at(key.find('[').unwrap_or(key.len()));
    let mut path = vec![Segment::Key(name)];
    while !rest.is_empty() {
        if path.len() == MAX_DEPTH {
            return None;
        }
        let closed = rest.strip_prefix('[').and_then(|inner| inner.split_once(']'));
        match closed {
            Some(("", after)) => {
                path.push(Segment::Append);
                rest = after;
            }
            Some((inner, after)) => {
                path.push(Segment::Key(inner));
                rest = after;
            }
            None => {
                path.push(Segment::Key(rest));
                rest = "";
            }
        }
    }
    Some(path)
}

/// An index as PHP would make it an integer key: plain decimal, no sign, no leading zero.
fn list_index(key: &str) -> Option<u64> {
    let canonical = key.bytes().all(|b| b.is_ascii_digit()) && (key == "0" || !key.starts_with('0'));
    if canonical { key.parse().ok() } else { None }
}

#[derive(Debug)]
enum Node {
    Leaf(String),
    Branch(Branch),
}

/// A map that remembers first-insertion order (an overwritten key keeps its place, as in PHP).
#[derive(Debug, Default)]
struct Branch {
    entries: Vec<(String, Node)>,
    index: HashMap<String, usize>,
    /// One past the largest index so far: where `[]` appends.
    next_index: u64,
}

impl Branch {
    fn insert(&mut self, path: &[Segment<'_>], value: String) {
        let Some((first, rest)) = path.split_first() else { return };
        let node = self.entry(first);
        if rest.is_empty() {
            *node = Node::Leaf(value);
            return;
        }
        if let Node::Leaf(_) = node {
            *node = Node::Branch(Branch::default());
        }
        if let Node::Branch(branch) = node {
            branch.insert(rest, value);
        }
    }

    fn entry(&mut self, segment: &Segment<'_>) -> &mut Node {
        let key = match segment {
            Segment::Key(key) => Cow::Borrowed(*key),
            Segment::Append => Cow::Owned(self.next_index.to_string()),
        };
        let at = match self.index.get(key.as_ref()) {
            Some(&at) => at,
            None => {
                if let Some(i) = list_index(&key) {
                    self.next_index = self.next_index.max(i.saturating_add(1));
                }
                let at = self.entries.len();
                self.entries.push((key.to_string(), Node::Leaf(String::new())));
                self.index.insert(key.into_owned(), at);
                at
            }
        };
        &mut self.entries[at].1
    }

    fn get(&self, key: &str) -> Option<&Node> {
        self.index.get(key).map(|&at| &self.entries[at].1)
    }

    fn leaf(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Node::Leaf(value)) => Some(value),
            _ => None,
        }
    }

    fn int(&self, key: &str) -> Option<i64> {
        self.leaf(key).and_then(|value| value.trim().parse().ok())
    }

    fn into_json(self) -> Value {
        let n = self.entries.len();
        // Only keys that are exactly 0..n make an array, so its length is the number of
        // entries sent, never an index a body chose.
        let is_list = n > 0 && self.entries.iter().all(|(k, _)| list_index(k).is_some_and(|i| i < n as u64));
        if is_list {
            let mut items = vec![Value::Null; n];
            for (key, node) in self.entries {
                if let Some(i) = list_index(&key).and_then(|i| usize::try_from(i).ok()) {
                    items[i] = node.into_json();
                }
            }
            return Value::Array(items);
        }
        Value::Object(self.entries.into_iter().map(|(key, node)| (key, node.into_json())).collect())
    }
}

impl Node {
    fn into_json(self) -> Value {
        match self {
            Node::Leaf(value) => Value::String(value),
            Node::Branch(branch) => branch.into_json(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::*;

    /// kommo.md §7, key for key in the order shown, encoded as Kommo sends it.
    const SECTION_7: &str = concat!(
        "account[subdomain]=acme",
        "&account[id]=29638927",
        "&account[_links][self]=https%3A%2F%2Facme.kommo.com",
        "&leads[status][0][id]=30307415",
        "&leads[status][0][name]=Order+%231042",
        "&leads[status][0][status_id]=142",
        "&leads[status][0][old_status_id]=41893093",
        "&leads[status][0][price]=1500",
        "&leads[status][0][responsible_user_id]=8744098",
        "&leads[status][0][last_modified]=1689281821",
        "&leads[status][0][modified_user_id]=8421298",
        "&leads[status][0][created_user_id]=0",
        "&leads[status][0][date_create]=1689256449",
        "&leads[status][0][pipeline_id]=4542166",
        "&leads[status][0][tags][0][id]=55515",
        "&leads[status][0][tags][0][name]=web",
        "&leads[status][0][account_id]=29638927",
        "&leads[status][0][custom_fields][0][id]=644897",
        "&leads[status][0][custom_fields][0][name]=Currency",
        "&leads[status][0][custom_fields][0][values][0][value]=EUR",
        "&leads[status][0][custom_fields][0][values][0][enum]=853027",
        "&leads[status][0][custom_fields][1][id]=645087",
        "&leads[status][0][custom_fields][1][name]=Paid+on",
        "&leads[status][0][custom_fields][1][values][0]=1689282000",
        "&leads[status][0][created_at]=1689256449",
        "&leads[status][0][updated_at]=1689281821",
    );

    fn parsed(body: &str) -> Webhook {
        parse(body.as_bytes()).unwrap()
    }

    fn ids(webhook: &Webhook) -> Vec<i64> {
        webhook.leads.iter().map(|l| l.lead_id).collect()
    }

    #[test]
    fn the_documented_stage_change_reads_as_one_status_event() {
        let hook = parsed(SECTION_7);
        assert_eq!(hook.account_id, Some(29638927));
        assert_eq!(hook.subdomain.as_deref(), Some("acme"));
        assert!(hook.skipped.is_empty(), "{:?}", hook.skipped);
        let [lead] = hook.leads.as_slice() else { panic!("one lead expected: {hook:?}") };
        assert_eq!(lead.action, LeadAction::Status);
        assert_eq!(lead.lead_id, 30307415);
        assert_eq!(lead.status_id, Some(142));
        assert_eq!(lead.old_status_id, Some(41893093));
        assert_eq!(lead.pipeline_id, Some(4542166));
        assert_eq!(lead.modified_at, Some(1689281821));
        assert_eq!(undigested(&lead.dedup_key()), "kommo:status:30307415:142:41893093:1689281821");
        assert_eq!(
            lead.raw,
            json!({
                "id": "30307415", "name": "Order #1042", "status_id": "142", "old_status_id": "41893093",
                "price": "1500", "responsible_user_id": "8744098", "last_modified": "1689281821",
                "modified_user_id": "8421298", "created_user_id": "0", "date_create": "1689256449",
                "pipeline_id": "4542166", "tags": [{"id": "55515", "name": "web"}], "account_id": "29638927",
                "custom_fields": [
                    {"id": "644897", "name": "Currency", "values": [{"value": "EUR", "enum": "853027"}]},
                    // The date quirk: a bare scalar where other fields have {value, enum}.
                    {"id": "645087", "name": "Paid on", "values": ["1689282000"]},
                ],
                "created_at": "1689256449", "updated_at": "1689281821",
            })
        );
    }

    #[test]
    fn a_body_built_like_the_fakes_with_escaped_brackets_reads_the_same() {
        // tests/it/fakes/kommo.rs builds its hook with form_urlencoded::Serializer, which
        // escapes the brackets; its builder is private to the test binary, so it is mirrored.
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (key, value) in form_urlencoded::parse(SECTION_7.as_bytes()) {
            let value = if key == "account[_links][self]" { "https://acme.amocrm.com".into() } else { value };
            form.append_pair(&key, &value);
        }
        let body = form.finish();
        assert!(body.contains("leads%5Bstatus%5D%5B0%5D%5Bid%5D=30307415"), "{body}");
        let (ours, fakes) = (parsed(SECTION_7), parsed(&body));
        assert_eq!(fakes.leads, ours.leads);
        assert_eq!(fakes.account_id, Some(29638927));
    }

    #[test]
    fn several_entities_come_out_in_numeric_index_order() {
        let body = "account[id]=1\
            &leads[status][2][id]=302&leads[status][10][id]=310\
            &leads[status][0][id]=300&leads[status][1][id]=301\
            &leads[status][9][id]=309&leads[status][1][status_id]=142";
        let hook = parsed(body);
        assert_eq!(ids(&hook), [300, 301, 302, 309, 310]);
        assert_eq!(hook.leads[1].status_id, Some(142));
        assert!(hook.leads.iter().all(|l| l.action == LeadAction::Status));
    }

    #[test]
    fn add_and_status_blocks_in_one_body_keep_their_actions_in_body_order() {
        let body = "account[id]=1&leads[add][0][id]=7&leads[add][0][date_create]=100\
            &leads[status][0][id]=8&leads[status][0][last_modified]=200\
            &leads[update][0][id]=9&leads[delete][0][id]=10&leads[add][1][id]=11";
        let hook = parsed(body);
        let actions: Vec<_> = hook.leads.iter().map(|l| (l.action.clone(), l.lead_id)).collect();
        assert_eq!(
            actions,
            [
                (LeadAction::Add, 7),
                (LeadAction::Add, 11),
                (LeadAction::Status, 8),
                (LeadAction::Other("update".into()), 9),
                (LeadAction::Other("delete".into()), 10),
            ]
        );
        // A new lead has no last_modified; its creation time stands in.
        assert_eq!(hook.leads[0].modified_at, Some(100));
        assert_eq!(undigested(&hook.leads[0].dedup_key()), "kommo:add:7:-:-:100");
        assert!(
            hook.leads[3].dedup_key().starts_with("kommo:update:9:-:-:-:"),
            "{}",
            hook.leads[3].dedup_key()
        );
        // Two edits within one second are two events; the same edit sent again is one.
        let edit = |price: &str| {
            let body = format!(
                "leads[update][0][id]=9&leads[update][0][last_modified]=500&leads[update][0][price]={price}"
            );
            parse(body.as_bytes()).unwrap().leads[0].dedup_key()
        };
        assert_ne!(edit("100"), edit("120"));
        assert_eq!(edit("100"), edit("100"));
    }

    #[test]
    fn radiobutton_values_stay_an_object_and_dates_a_bare_scalar() {
        let body = "leads[status][0][id]=5\
            &leads[status][0][custom_fields][0][id]=11&leads[status][0][custom_fields][0][values][value]=Yes\
            &leads[status][0][custom_fields][0][values][enum]=77\
            &leads[status][0][custom_fields][1][id]=12&leads[status][0][custom_fields][1][values][0]=1689282000";
        let raw = &parsed(body).leads[0].raw;
        assert_eq!(raw["custom_fields"][0]["values"], json!({"value": "Yes", "enum": "77"}));
        assert_eq!(raw["custom_fields"][1]["values"], json!(["1689282000"]));
    }

    #[test]
    fn plus_and_percent_escapes_are_decoded_in_keys_and_values() {
        let body = "account%5Bid%5D=%2029638927%20&account[subdomain]=+acme+\
            &leads[status][0][id]=%2B5&leads[status][0][name]=Order+%231042%20%E2%82%AC+now\
            &leads[status][0][bad]=%FF";
        let hook = parsed(body);
        assert_eq!(hook.account_id, Some(29638927));
        assert_eq!(hook.subdomain.as_deref(), Some("acme"));
        let lead = &hook.leads[0];
        assert_eq!(lead.lead_id, 5);
        assert_eq!(lead.raw["name"], "Order #1042 € now");
        // An escape that is not UTF-8 spoils only its own value.
        assert_eq!(lead.raw["bad"], "\u{FFFD}");
    }

    #[test]
    fn a_body_with_only_the_account_is_a_hook_without_leads() {
        let hook = parsed("account[subdomain]=acme&account[id]=29638927&account[_links][self]=x");
        assert_eq!(
            hook,
            Webhook {
                account_id: Some(29638927),
                subdomain: Some("acme".into()),
                leads: vec![],
                skipped: vec![]
            }
        );
        let blank = parsed("account[subdomain]=++&account[id]=");
        assert_eq!((blank.account_id, blank.subdomain), (None, None));
    }

    #[test]
    fn other_entities_are_ignored_but_a_body_of_nothing_else_is_not_a_hook() {
        let body = "account[id]=1&contacts[add][0][id]=5&contacts[add][0][type]=contact\
            &unsorted[add][0][uid]=x&talk[add][0][talk_id]=9&leads[status][0][id]=3";
        let hook = parsed(body);
        assert_eq!(ids(&hook), [3]);
        assert!(hook.skipped.is_empty());
        assert_eq!(parse(b"contacts[add][0][id]=5&talk[add][0][id]=1"), Err(ParseError::NotAWebhook));
    }

    #[test]
    fn garbage_is_an_error_not_an_empty_hook() {
        assert_eq!(parse(b"account[id]=1&\xff\xfe"), Err(ParseError::NotUtf8 { valid_up_to: 14 }));
        assert_eq!(parse(b""), Err(ParseError::NotAWebhook));
        assert_eq!(parse(b"hello world"), Err(ParseError::NotAWebhook));
        assert_eq!(parse(br#"{"leads":{"status":[{"id":1}]}}"#), Err(ParseError::NotAWebhook));
        assert_eq!(parse(b"account[id]=acme"), Err(ParseError::AccountId("\"acme\"".into())));
        assert_eq!(parse(b"account[id][0]=1"), Err(ParseError::AccountId("a nested value".into())));
        let long = format!("account[id]={}", "x".repeat(10_000));
        let Err(ParseError::AccountId(shown)) = parse(long.as_bytes()) else { panic!("an account id error") };
        assert!(shown.len() < 60, "{shown}");
    }

    #[test]
    fn notes_escape_what_they_quote() {
        let hook = parsed("leads[status%0Aforged][0][id]=x%0Ay&leads[%E2%82%AC]=1");
        assert_eq!(
            hook.skipped,
            [
                "leads[status\\nforged][0]: the id \"x\\ny\" is not a positive integer",
                "leads[€]: a plain value, not a list of entities",
            ]
        );
    }

    #[test]
    fn a_malformed_entity_is_skipped_and_the_others_still_read() {
        let body = "account[id]=1\
            &leads[status][0][name]=no+id\
            &leads[status][1][id]=abc\
            &leads[status][2][id]=+42+\
            &leads[status][3]=flat\
            &leads[status][4][id]=-5\
            &leads[status][5][id][x]=6\
            &leads[status][6][id]=43&leads[status][6][status_id]=won&leads[status][6][pipeline_id]=\
            &leads[restore]=flat";
        let hook = parsed(body);
        assert_eq!(ids(&hook), [42, 43]);
        assert_eq!(hook.leads[0].raw["id"], " 42 ", "raw keeps values exactly as sent");
        assert_eq!((hook.leads[1].status_id, hook.leads[1].pipeline_id), (None, None));
        assert_eq!(
            hook.skipped,
            [
                "leads[status][0]: no id",
                "leads[status][1]: the id \"abc\" is not a positive integer",
                "leads[status][3]: a plain value, not an entity",
                "leads[status][4]: the id \"-5\" is not a positive integer",
                "leads[status][5]: the id is a nested value",
                "leads[restore]: a plain value, not a list of entities",
            ]
        );
    }

    #[test]
    fn repeated_keys_last_one_wins() {
        let body = "leads[status][0][id]=1&leads[status][0][status_id]=100&leads[status][0][status_id]=142\
            &leads[status][0][tags]=none&leads[status][0][tags][0][name]=web\
            &leads[status][0][custom_fields][0][id]=5&leads[status][0][custom_fields]=gone\
            &leads[status][0][id]=2";
        let lead = &parsed(body).leads[0];
        assert_eq!((lead.lead_id, lead.status_id), (2, Some(142)));
        assert_eq!(lead.raw["tags"], json!([{"name": "web"}]));
        assert_eq!(lead.raw["custom_fields"], "gone");
    }

    #[test]
    fn empty_values_and_keys_without_a_value_read_as_empty_strings() {
        let lead = &parsed("leads[status][0][id]=4&leads[status][0][name]=&leads[status][0][price]").leads[0];
        assert_eq!(lead.raw, json!({"id": "4", "name": "", "price": ""}));
    }

    #[test]
    fn unclosed_brackets_and_trailing_text_are_kept_literally() {
        let body = "account[id=5&leads[status][0][id]=6&leads[status][0][name=x&leads[status][0][a]b=y\
            &leads[status][0][tags][]=t0&leads[status][0][tags][]=t1&leads[status";
        let hook = parsed(body);
        assert_eq!(hook.account_id, None, "account[id has no id");
        assert_eq!(
            hook.leads[0].raw,
            json!({"id": "6", "[name": "x", "a": {"b": "y"}, "tags": ["t0", "t1"]})
        );
        assert_eq!(hook.skipped, ["leads[[status]: a plain value, not a list of entities"]);
    }

    #[test]
    fn empty_brackets_append_after_the_largest_index() {
        let body = "leads[status][0][id]=1&leads[status][0][v][5]=a&leads[status][0][v][]=b\
            &leads[status][][id]=2&leads[status][][id]=3";
        let hook = parsed(body);
        assert_eq!(ids(&hook), [1, 2, 3]);
        assert_eq!(hook.leads[0].raw["v"], json!({"5": "a", "6": "b"}));
    }

    #[test]
    fn huge_indices_do_not_allocate_by_index() {
        let body = "account[id]=1&leads[status][999999999][id]=7\
            &leads[status][18446744073709551616][id]=8&leads[status][4][id]=6\
            &leads[status][999999999][tags][999999999999][id]=1&leads[status][999999999][tags][]=2";
        let started = Instant::now();
        let hook = parsed(body);
        assert_eq!(ids(&hook), [6, 7, 8], "an index past u64 sorts after the numbers");
        assert_eq!(hook.leads[1].raw["tags"], json!({"999999999999": {"id": "1"}, "1000000000000": "2"}));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn keys_deeper_than_the_cap_are_skipped_quickly() {
        let deep = format!("leads[status][0][x]{}", "[a]".repeat(200_000));
        let brackets = format!("leads[status][0][y]{}", "[".repeat(200_000));
        let closing = format!("leads[status][0][z]{}", "[]".repeat(200_000));
        let sixteen = format!("leads[status][0]{}", "[b]".repeat(13));
        let body =
            format!("account[id]=1&leads[status][0][id]=9&{deep}=1&{brackets}=2&{closing}=3&{sixteen}=4");
        let started = Instant::now();
        let hook = parsed(&body);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(ids(&hook), [9]);
        let raw = &hook.leads[0].raw;
        assert_eq!(raw["y"].as_object().map(|y| y.len()), Some(1), "unclosed: one literal key");
        assert!(raw.get("x").is_none() && raw.get("z").is_none());
        let mut at = &raw["b"];
        for _ in 0..12 {
            at = &at["b"];
        }
        assert_eq!(*at, "4", "16 levels are still read");
        assert_eq!(hook.skipped, [format!("2 key(s) nested deeper than {MAX_DEPTH} levels")]);
        assert_eq!(parse(format!("{deep}=1").as_bytes()), Err(ParseError::NotAWebhook));
    }

    #[test]
    fn repeated_deliveries_share_a_dedup_key_and_later_changes_do_not() {
        let first = parsed(SECTION_7);
        let again = parsed(SECTION_7);
        assert_eq!(first.leads[0].dedup_key(), again.leads[0].dedup_key());

        let later = SECTION_7
            .replace("[last_modified]=1689281821", "[last_modified]=1689285000")
            .replace("[updated_at]=1689281821", "[updated_at]=1689285000");
        assert_eq!(
            undigested(&parsed(&later).leads[0].dedup_key()),
            "kommo:status:30307415:142:41893093:1689285000"
        );
        let lost = SECTION_7.replace("[status_id]=142", "[status_id]=143");
        assert_eq!(
            undigested(&parsed(&lost).leads[0].dedup_key()),
            "kommo:status:30307415:143:41893093:1689281821"
        );
    }

    /// A key without its digest, to read in a test.
    fn undigested(key: &str) -> &str {
        key.rsplit_once(':').map_or(key, |(head, digest)| {
            assert_eq!(digest.len(), 16, "{key}");
            head
        })
    }

    #[test]
    fn stage_changes_within_one_second_are_told_apart_and_repeats_are_not() {
        // Kommo's times are whole seconds: trigger, lost and trigger again in one second.
        let moved = |to: i64, from: i64| {
            let body = format!(
                "account[id]=1&leads[status][0][id]=31&leads[status][0][status_id]={to}\
                 &leads[status][0][old_status_id]={from}&leads[status][0][pipeline_id]=7001\
                 &leads[status][0][last_modified]=1700000000"
            );
            parsed(&body).leads[0].dedup_key()
        };
        let (trigger, lost, back) = (moved(7003, 7002), moved(143, 7003), moved(7003, 143));
        assert_ne!(trigger, back, "back in the trigger stage is a change, not a repeat");
        assert_ne!(trigger, lost);
        assert_ne!(lost, back);
        assert_eq!(back, moved(7003, 143), "the same delivery again is a repeat");

        // The same stage change with another field changed in the same second (the price
        // edited while the lead was out of the trigger stage) is a change too.
        let priced = |price: &str| {
            let body = format!(
                "leads[status][0][id]=31&leads[status][0][status_id]=7003&leads[status][0][old_status_id]=7002\
                 &leads[status][0][last_modified]=1700000000&leads[status][0][price]={price}"
            );
            parsed(&body).leads[0].dedup_key()
        };
        assert_ne!(priced("500"), priced("650"));
        assert_eq!(priced("500"), priced("500"));
    }

    #[test]
    fn the_modification_time_falls_back_in_order() {
        let at = |fields: &str| parsed(&format!("leads[status][0][id]=1{fields}")).leads[0].modified_at;
        assert_eq!(at("&leads[status][0][last_modified]=4&leads[status][0][updated_at]=3"), Some(4));
        assert_eq!(at("&leads[status][0][last_modified]=soon&leads[status][0][updated_at]=3"), Some(3));
        assert_eq!(at("&leads[status][0][created_at]=1&leads[status][0][date_create]=2"), Some(2));
        assert_eq!(at("&leads[status][0][created_at]=+1+"), Some(1));
        assert_eq!(at(""), None);
    }

    #[test]
    fn split_key_follows_php_brackets() {
        use Segment::{Append, Key};
        assert_eq!(split_key("a"), Some(vec![Key("a")]));
        assert_eq!(split_key("a[b][][c]"), Some(vec![Key("a"), Key("b"), Append, Key("c")]));
        assert_eq!(split_key("a[b"), Some(vec![Key("a"), Key("[b")]));
        assert_eq!(split_key("a[b]c[d]"), Some(vec![Key("a"), Key("b"), Key("c[d]")]));
        assert_eq!(split_key("[x]"), Some(vec![Key(""), Key("x")]));
        assert_eq!(split_key(&format!("a{}", "[b]".repeat(MAX_DEPTH - 1))).map(|p| p.len()), Some(MAX_DEPTH));
        assert_eq!(split_key(&format!("a{}", "[b]".repeat(MAX_DEPTH))), None);
    }
}
