//! DNS-SD messages (RFC 6762, RFC 6763) as the registry sends and reads them; the DNS wire
//! format itself is simple-dns'.

use std::net::Ipv4Addr;

use simple_dns::{
    CLASS, Name, Packet, PacketFlag, QCLASS, QTYPE, Question, ResourceRecord, SimpleDnsError, TYPE,
    rdata::{A, PTR, RData, SRV, TXT},
};

/// The service type, without the root dot: [`super::SERVICE_TYPE`] on the wire.
pub(crate) const SERVICE: &str = "_micro._tcp.local";

/// The largest packet we build: an Ethernet MTU less the IPv4 and UDP headers.
pub(crate) const MAX_PACKET: usize = 1472;

/// At most this many questions go in one query packet (names of up to ~100 bytes each).
const QUESTIONS_PER_PACKET: usize = 12;

/// The TTL of answers to legacy unicast queries (RFC 6762 §6.7: at most 10 s).
const LEGACY_TTL: u32 = 10;

/// One instance this registry answers for: PTR `_micro._tcp.local` → `fullname`, SRV and TXT
/// of `fullname`, A of `host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Instance {
    /// `<label>._micro._tcp.local`.
    pub(crate) fullname: String,
    /// `<label>.local`.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The TXT entries, as `txt::encode` made them.
    pub(crate) entries: Vec<(String, String)>,
    txt: TXT<'static>,
    /// The TTL of every record, in seconds.
    pub(crate) ttl: u32,
}

impl Instance {
    /// The instance of `label`; fails when a name or an entry does not fit DNS (which
    /// `txt::encode` has already ruled out).
    pub(crate) fn new(
        label: &str,
        port: u16,
        entries: Vec<(String, String)>,
        ttl: u32,
    ) -> Result<Self, SimpleDnsError> {
        let fullname = format!("{label}.{SERVICE}");
        let host = format!("{label}.local");
        Name::new(&fullname)?;
        Name::new(&host)?;
        let mut txt = TXT::new();
        for (key, value) in &entries {
            txt.add_attribute(key, Some(value.as_bytes()))?;
        }
        Ok(Self {
            fullname,
            host,
            port,
            entries,
            txt,
            ttl,
        })
    }

    /// The lower-case full name: the key of caches and views.
    pub(crate) fn key(&self) -> String {
        self.fullname.to_ascii_lowercase()
    }

    /// Appends this instance's records with `ttl`, the A record saying `addr`. The PTR goes
    /// in the answers; SRV, TXT and A in the answers too, or (answering a PTR question) in
    /// the additional records (RFC 6763 §12.1).
    fn push<'a>(
        &'a self,
        packet: &mut Packet<'a>,
        addr: Ipv4Addr,
        ttl: u32,
        additional: bool,
    ) -> Result<(), SimpleDnsError> {
        let fullname = Name::new(&self.fullname)?;
        let host = Name::new(&self.host)?;
        packet.answers.push(ResourceRecord::new(
            Name::new(SERVICE)?,
            CLASS::IN,
            ttl,
            RData::PTR(PTR(fullname.clone())),
        ));
        let srv = SRV {
            priority: 0,
            weight: 0,
            port: self.port,
            target: host.clone(),
        };
        // SRV, TXT and A are unique to this responder: cache-flush (RFC 6762 §10.2).
        let unique = [
            ResourceRecord::new(fullname.clone(), CLASS::IN, ttl, RData::SRV(srv)),
            ResourceRecord::new(fullname, CLASS::IN, ttl, RData::TXT(self.txt.clone())),
            ResourceRecord::new(host, CLASS::IN, ttl, RData::A(A::from(addr))),
        ]
        .map(|r| r.with_cache_flush(true));
        if additional {
            packet.additional_records.extend(unique);
        } else {
            packet.answers.extend(unique);
        }
        Ok(())
    }
}

/// How a response is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// An unsolicited announcement with the records' own TTL.
    Announce,
    /// A goodbye: every record with TTL 0.
    Goodbye,
    /// An answer to a multicast query (PTR answers carry the rest as additional records).
    Answer,
    /// An answer to a legacy unicast query: its id and questions echoed, TTLs capped.
    Legacy,
}

/// The response packets carrying `instances`, the A records saying `addr`, as few packets
/// as [`MAX_PACKET`] allows (one instance's records are never split). `query` is the id and
/// questions of a legacy query ([`Reply::Legacy`]).
pub(crate) fn response(
    instances: &[&Instance],
    addr: Ipv4Addr,
    reply: Reply,
    query: Option<&Query>,
) -> Vec<Vec<u8>> {
    let mut base = Packet::new_reply(0);
    base.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    if let (Reply::Legacy, Some(query)) = (reply, query) {
        base.set_id(query.id);
        for q in &query.questions {
            if let Ok(name) = Name::new(&q.name) {
                base.questions.push(Question::new(
                    name,
                    q.qtype,
                    QCLASS::CLASS(CLASS::IN),
                    false,
                ));
            }
        }
    }
    let ttl = |i: &Instance| match reply {
        Reply::Goodbye => 0,
        Reply::Legacy => i.ttl.min(LEGACY_TTL),
        Reply::Announce | Reply::Answer => i.ttl,
    };
    let additional = reply != Reply::Announce && reply != Reply::Goodbye;

    let mut packets = Vec::new();
    let mut current = base.clone();
    let mut current_bytes: Option<Vec<u8>> = None;
    for instance in instances {
        let mut next = current.clone();
        let built = instance
            .push(&mut next, addr, ttl(instance), additional)
            .and_then(|()| next.build_bytes_vec_compressed());
        let bytes = match built {
            Ok(bytes) if bytes.len() <= MAX_PACKET || current_bytes.is_none() => bytes,
            Ok(_) => {
                // Full: send what we have and start a packet with this instance alone.
                packets.extend(current_bytes.take());
                next = base.clone();
                match instance
                    .push(&mut next, addr, ttl(instance), additional)
                    .and_then(|()| next.build_bytes_vec_compressed())
                {
                    Ok(bytes) => bytes,
                    Err(err) => {
                        tracing::debug!(instance = %instance.fullname, %err, "cannot encode an mDNS answer");
                        current = base.clone();
                        continue;
                    }
                }
            }
            Err(err) => {
                tracing::debug!(instance = %instance.fullname, %err, "cannot encode an mDNS answer");
                continue;
            }
        };
        current = next;
        current_bytes = Some(bytes);
    }
    packets.extend(current_bytes);
    packets
}

/// The query for every `_micro._tcp.local` instance (PTR).
pub(crate) fn browse_query() -> Vec<Vec<u8>> {
    query_packets(&[(SERVICE.to_owned(), TYPE::PTR)])
}

/// Queries for the TXT records of these instance names (to resolve or refresh them).
pub(crate) fn txt_queries(names: &[String]) -> Vec<Vec<u8>> {
    let questions: Vec<(String, TYPE)> = names.iter().map(|n| (n.clone(), TYPE::TXT)).collect();
    query_packets(&questions)
}

fn query_packets(questions: &[(String, TYPE)]) -> Vec<Vec<u8>> {
    questions
        .chunks(QUESTIONS_PER_PACKET)
        .filter_map(|chunk| {
            let mut packet = Packet::new_query(0);
            for (name, qtype) in chunk {
                match Name::new(name) {
                    Ok(name) => packet.questions.push(Question::new(
                        name,
                        QTYPE::TYPE(*qtype),
                        QCLASS::CLASS(CLASS::IN),
                        false,
                    )),
                    Err(err) => tracing::debug!(%name, %err, "cannot ask for this name"),
                }
            }
            if packet.questions.is_empty() {
                return None;
            }
            packet
                .build_bytes_vec_compressed()
                .map_err(|err| tracing::debug!(%err, "cannot encode an mDNS query"))
                .ok()
        })
        .collect()
}

/// A received query: what it asks and which PTR answers the asker already has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Query {
    pub(crate) id: u16,
    pub(crate) questions: Vec<Asked>,
    /// Known answers (RFC 6762 §7.1): lower-case instance names of `_micro._tcp.local` PTRs,
    /// with their remaining TTL.
    pub(crate) known: Vec<(String, u32)>,
}

/// One question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Asked {
    /// The name as asked (lower-case it to compare).
    pub(crate) name: String,
    pub(crate) qtype: QTYPE,
    /// The QU bit: the asker wants a unicast answer.
    pub(crate) unicast: bool,
}

impl Asked {
    /// Whether this asks for the records of type `wanted` (or any).
    pub(crate) fn wants(&self, wanted: TYPE) -> bool {
        matches!(self.qtype, QTYPE::ANY) || self.qtype == QTYPE::TYPE(wanted)
    }
}

/// What a response told about `_micro._tcp.local`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    /// PTR `_micro._tcp.local` → `instance` (lower-case); TTL 0 is a goodbye.
    Ptr { instance: String, ttl: u32 },
    /// The TXT record of `instance` (lower-case); TTL 0 is a goodbye.
    Txt {
        instance: String,
        entries: Vec<(String, Option<Vec<u8>>)>,
        ttl: u32,
    },
}

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    Query(Query),
    Response(Vec<Seen>),
}

/// Reads a packet; `None` (with a debug line) for one that is not DNS.
pub(crate) fn parse(bytes: &[u8]) -> Option<Message> {
    let packet = match Packet::parse(bytes) {
        Ok(packet) => packet,
        Err(err) => {
            tracing::debug!(%err, len = bytes.len(), "ignoring a malformed mDNS packet");
            return None;
        }
    };
    if packet.has_flags(PacketFlag::RESPONSE) {
        let seen = packet
            .answers
            .iter()
            .chain(&packet.additional_records)
            .filter_map(seen)
            .collect();
        Some(Message::Response(seen))
    } else {
        let questions = packet
            .questions
            .iter()
            .map(|q| Asked {
                name: q.qname.to_string(),
                qtype: q.qtype,
                unicast: q.unicast_response,
            })
            .collect();
        let known = packet
            .answers
            .iter()
            .filter_map(|r| match seen(r)? {
                Seen::Ptr { instance, ttl } => Some((instance, ttl)),
                Seen::Txt { .. } => None,
            })
            .collect();
        Some(Message::Query(Query {
            id: packet.id(),
            questions,
            known,
        }))
    }
}

/// What one record says about our service type, if anything.
fn seen(record: &ResourceRecord<'_>) -> Option<Seen> {
    let owner = record.name.to_string().to_ascii_lowercase();
    match &record.rdata {
        RData::PTR(ptr) if owner == SERVICE => {
            let instance = ptr.0.to_string().to_ascii_lowercase();
            is_instance(&instance).then_some(Seen::Ptr {
                instance,
                ttl: record.ttl,
            })
        }
        RData::TXT(txt) if is_instance(&owner) => {
            let mut entries = Vec::new();
            for (key, value) in txt.iter_raw() {
                let Ok(key) = std::str::from_utf8(key) else {
                    tracing::debug!(instance = %owner, "ignoring a TXT record with a non-UTF-8 key");
                    return None;
                };
                entries.push((key.to_owned(), value.map(<[u8]>::to_vec)));
            }
            Some(Seen::Txt {
                instance: owner,
                entries,
                ttl: record.ttl,
            })
        }
        _ => None,
    }
}

/// Whether a lower-case name is an instance of our service type.
fn is_instance(name: &str) -> bool {
    name.strip_suffix(SERVICE)
        .and_then(|label| label.strip_suffix('.'))
        .is_some_and(|label| !label.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(label: &str, value: &str) -> Instance {
        Instance::new(
            label,
            50051,
            vec![
                ("txtvers".into(), "1".into()),
                ("node".into(), value.into()),
            ],
            120,
        )
        .unwrap()
    }

    #[test]
    fn announcements_read_back() {
        let a = instance("n1-00000000000000aa", "a=b");
        let packets = response(&[&a], Ipv4Addr::LOCALHOST, Reply::Announce, None);
        assert_eq!(packets.len(), 1);
        let Some(Message::Response(seen)) = parse(&packets[0]) else {
            panic!("not a response")
        };
        assert_eq!(
            seen,
            [
                Seen::Ptr {
                    instance: a.key(),
                    ttl: 120
                },
                Seen::Txt {
                    instance: a.key(),
                    entries: vec![
                        ("txtvers".into(), Some(b"1".to_vec())),
                        ("node".into(), Some(b"a=b".to_vec()))
                    ],
                    ttl: 120
                }
            ]
        );
        let packets = response(&[&a], Ipv4Addr::LOCALHOST, Reply::Goodbye, None);
        let Some(Message::Response(seen)) = parse(&packets[0]) else {
            panic!("not a response")
        };
        assert!(
            seen.iter()
                .all(|s| matches!(s, Seen::Ptr { ttl: 0, .. } | Seen::Txt { ttl: 0, .. }))
        );
    }

    #[test]
    fn big_answers_split_per_instance() {
        let big = "x".repeat(240);
        let instances: Vec<Instance> = (0..5)
            .map(|i| {
                let mut inst = instance(&format!("n{i}"), &big);
                let entries: Vec<(String, String)> =
                    (0..4).map(|k| (format!("k{k}"), big.clone())).collect();
                inst = Instance::new(&format!("n{i}"), 1, entries, 60).unwrap_or(inst);
                inst
            })
            .collect();
        let refs: Vec<&Instance> = instances.iter().collect();
        let packets = response(&refs, Ipv4Addr::LOCALHOST, Reply::Answer, None);
        assert_eq!(packets.len(), 5);
        assert!(packets.iter().all(|p| p.len() <= MAX_PACKET));
    }

    #[test]
    fn queries_and_garbage() {
        let Some(Message::Query(query)) = parse(&browse_query()[0]) else {
            panic!("not a query")
        };
        assert_eq!(query.questions.len(), 1);
        assert_eq!(query.questions[0].name, SERVICE);
        assert!(query.questions[0].wants(TYPE::PTR));
        assert!(!query.questions[0].wants(TYPE::TXT));
        let names: Vec<String> = (0..30).map(|i| format!("n{i}.{SERVICE}")).collect();
        assert_eq!(txt_queries(&names).len(), 3);

        assert_eq!(parse(b"\x00\x01garbage"), None);
        assert_eq!(parse(&[]), None);
        let mut truncated = response(
            &[&instance("n1", "v")],
            Ipv4Addr::LOCALHOST,
            Reply::Announce,
            None,
        )
        .remove(0);
        truncated.truncate(truncated.len() - 7);
        assert_eq!(parse(&truncated), None);
    }

    #[test]
    fn instance_names() {
        assert!(is_instance("n1._micro._tcp.local"));
        assert!(!is_instance("._micro._tcp.local"));
        assert!(!is_instance("_micro._tcp.local"));
        assert!(!is_instance("n1._http._tcp.local"));
    }
}
