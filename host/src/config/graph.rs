//! The pipeline as a dependency graph: stages wired by the topics they
//! consume and produce. Finds cycles and dangling inputs for the config
//! checks, and draws the graph as Mermaid or Graphviz DOT for `host graph`
//! (and as JSON for the admin console).

use super::pipeline::{Pipeline, Routing};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// How a stage writes to a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// The stage's `output`.
    Output,
    /// A named branch.
    Branch(String),
    /// The stage's `dead_letter` topic.
    DeadLetter,
}

/// One topic a stage writes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produced {
    /// Index of the writing stage in `stages`.
    pub stage: usize,
    /// The topic.
    pub topic: String,
    /// How the stage writes to it.
    pub link: Link,
}

/// The stages and topics of one pipeline.
#[derive(Debug)]
pub struct Graph<'a> {
    config: &'a Pipeline,
    produced: Vec<Produced>,
}

/// A stage input that no stage produces and `sources` does not list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dangling {
    /// Index of the stage in `stages`.
    pub stage: usize,
    /// Its input topic.
    pub topic: String,
}

impl<'a> Graph<'a> {
    /// The graph of a pipeline.
    pub fn of(config: &'a Pipeline) -> Self {
        let mut produced = Vec::new();
        for (index, stage) in config.stages.iter().enumerate() {
            produced.push(Produced {
                stage: index,
                topic: stage.output.clone(),
                link: Link::Output,
            });
            for (name, topic) in &stage.branches {
                produced.push(Produced {
                    stage: index,
                    topic: topic.clone(),
                    link: Link::Branch(name.clone()),
                });
            }
            produced.push(Produced {
                stage: index,
                topic: stage.dead_letter.clone(),
                link: Link::DeadLetter,
            });
        }
        Self { config, produced }
    }

    /// Topics that feed the graph from outside: `sources` if the config
    /// lists them, otherwise every input that no stage produces.
    pub fn sources(&self) -> BTreeSet<&'a str> {
        match &self.config.sources {
            Some(sources) => sources.iter().map(String::as_str).collect(),
            None => self
                .config
                .stages
                .iter()
                .map(|stage| stage.input.as_str())
                .filter(|input| !self.is_produced(input))
                .collect(),
        }
    }

    fn is_produced(&self, topic: &str) -> bool {
        self.produced.iter().any(|produced| produced.topic == topic)
    }

    /// Inputs that nothing feeds: neither produced by a stage nor listed in
    /// `sources`. Empty when the config has no `sources`.
    pub fn dangling(&self) -> Vec<Dangling> {
        let Some(sources) = &self.config.sources else {
            return Vec::new();
        };
        self.config
            .stages
            .iter()
            .enumerate()
            .filter(|(_, stage)| !sources.contains(&stage.input) && !self.is_produced(&stage.input))
            .map(|(index, stage)| Dangling {
                stage: index,
                topic: stage.input.clone(),
            })
            .collect()
    }

    /// Stages reading what `stage` writes, each with the topic it reads.
    fn downstream(&self, stage: usize) -> Vec<(usize, &str)> {
        let written: BTreeSet<&str> = self
            .produced
            .iter()
            .filter(|produced| produced.stage == stage)
            .map(|produced| produced.topic.as_str())
            .collect();
        self.config
            .stages
            .iter()
            .enumerate()
            .filter(|(_, reader)| written.contains(reader.input.as_str()))
            .map(|(index, reader)| (index, reader.input.as_str()))
            .collect()
    }

    /// A cycle of stages, if there is one: the stage indices along it, the
    /// first repeated at the end.
    pub fn cycle(&self) -> Option<Vec<usize>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnPath,
            Done,
        }
        let count = self.config.stages.len();
        let mut marks = vec![Mark::New; count];
        for start in 0..count {
            if marks[start] != Mark::New {
                continue;
            }
            // Depth-first, with an explicit stack of (stage, next child index).
            let mut path = vec![(start, 0usize)];
            marks[start] = Mark::OnPath;
            while let Some(&mut (stage, ref mut next)) = path.last_mut() {
                let children = self.downstream(stage);
                if let Some(&(child, _)) = children.get(*next) {
                    *next += 1;
                    match marks[child] {
                        Mark::New => {
                            marks[child] = Mark::OnPath;
                            path.push((child, 0));
                        }
                        Mark::OnPath => {
                            let from = path.iter().position(|&(at, _)| at == child)?;
                            let mut cycle: Vec<usize> =
                                path[from..].iter().map(|&(at, _)| at).collect();
                            cycle.push(child);
                            return Some(cycle);
                        }
                        Mark::Done => {}
                    }
                } else {
                    marks[stage] = Mark::Done;
                    path.pop();
                }
            }
        }
        None
    }

    /// The cycle's stages as `a → b → a`, with the topics between them.
    pub fn describe_cycle(&self, cycle: &[usize]) -> String {
        let stages = &self.config.stages;
        let mut text = stages[cycle[0]].name.clone();
        for &next in &cycle[1..] {
            let _ = write!(text, " → ({}) → {}", stages[next].input, stages[next].name);
        }
        text
    }

    /// The graph as a Mermaid flowchart: topics as rounded nodes (sources
    /// as parallelograms), stages as boxes naming their handlers,
    /// dead-letter links dotted.
    pub fn mermaid(&self) -> String {
        self.draw(&Mermaid)
    }

    /// The graph in Graphviz DOT: `host graph --format dot | dot -Tsvg`.
    pub fn dot(&self) -> String {
        self.draw(&Dot)
    }

    /// The graph as JSON, for the admin console (`GET /graph`): the nodes
    /// and edges [`Graph::mermaid`] and [`Graph::dot`] draw, as
    /// `{topics: [{id, name, kind}], stages: [{id, name, input, handlers,
    /// routes}], edges: [{from, to, link, branch?}]}`.
    pub fn json(&self) -> serde_json::Value {
        use serde_json::json;
        let names = self.node_names();
        let sources = self.sources();
        let topics: Vec<_> = names
            .topics
            .iter()
            .map(|(topic, id)| {
                let kind = if sources.contains(topic.as_str()) {
                    "source"
                } else if self.is_dead_letter_only(topic) {
                    "dead-letters"
                } else {
                    "plain"
                };
                json!({ "id": id, "name": topic, "kind": kind })
            })
            .collect();
        let stages: Vec<_> = self
            .config
            .stages
            .iter()
            .enumerate()
            .map(|(index, stage)| {
                let handlers: BTreeSet<&str> = match &stage.routing {
                    Routing::Single(handler) => [handler.as_str()].into(),
                    Routing::ByField { to, .. } => to.values().map(String::as_str).collect(),
                };
                json!({
                    "id": names.stages[index],
                    "name": stage.name,
                    "input": stage.input,
                    "handlers": handlers,
                    "routes": self.handlers_of(index),
                })
            })
            .collect();
        let mut edges: Vec<_> = self
            .config
            .stages
            .iter()
            .enumerate()
            .map(|(index, stage)| {
                json!({ "from": names.topics[&stage.input], "to": names.stages[index], "link": "input" })
            })
            .collect();
        edges.extend(self.produced.iter().map(|produced| {
            let (link, branch) = match &produced.link {
                Link::Output => ("output", None),
                Link::Branch(name) => ("branch", Some(name.as_str())),
                Link::DeadLetter => ("dead-letter", None),
            };
            json!({
                "from": names.stages[produced.stage],
                "to": names.topics[&produced.topic],
                "link": link,
                "branch": branch,
            })
        }));
        json!({ "topics": topics, "stages": stages, "edges": edges })
    }

    /// Every node, then every edge, in the given language.
    fn draw(&self, language: &dyn Language) -> String {
        let names = self.node_names();
        let sources = self.sources();
        let mut out = language.start();
        for (topic, id) in &names.topics {
            let kind = if sources.contains(topic.as_str()) {
                TopicKind::Source
            } else if self.is_dead_letter_only(topic) {
                TopicKind::DeadLetters
            } else {
                TopicKind::Plain
            };
            out.push_str(&language.topic(id, topic, kind));
        }
        for (index, stage) in self.config.stages.iter().enumerate() {
            out.push_str(&language.stage(
                &names.stages[index],
                &stage.name,
                &self.handlers_of(index),
            ));
        }
        for (index, stage) in self.config.stages.iter().enumerate() {
            out.push_str(&language.edge(&names.topics[&stage.input], &names.stages[index], None));
        }
        for produced in &self.produced {
            out.push_str(&language.edge(
                &names.stages[produced.stage],
                &names.topics[&produced.topic],
                Some(&produced.link),
            ));
        }
        out.push_str(language.end());
        out
    }

    fn is_dead_letter_only(&self, topic: &str) -> bool {
        let mut writers = self.produced.iter().filter(|p| p.topic == topic).peekable();
        writers.peek().is_some() && writers.all(|p| p.link == Link::DeadLetter)
    }

    /// `handler` or `field: value → handler, …` for a stage's box.
    fn handlers_of(&self, index: usize) -> String {
        let stage = &self.config.stages[index];
        match &stage.routing {
            Routing::Single(handler) => handler.clone(),
            Routing::ByField { field, to } => {
                let by_handler: BTreeMap<&str, Vec<&str>> =
                    to.iter()
                        .fold(BTreeMap::new(), |mut map, (value, handler)| {
                            map.entry(handler.as_str())
                                .or_default()
                                .push(value.as_str());
                            map
                        });
                let routes: Vec<String> = by_handler
                    .iter()
                    .map(|(handler, values)| format!("{} → {handler}", values.join("|")))
                    .collect();
                format!("{field}: {}", routes.join(", "))
            }
        }
    }

    /// Identifiers safe in both languages: `t0…` for topics, `s0…` for stages.
    fn node_names(&self) -> NodeNames {
        let mut topics = BTreeMap::new();
        let all = self
            .config
            .stages
            .iter()
            .map(|stage| stage.input.clone())
            .chain(self.config.sources.iter().flatten().cloned())
            .chain(self.produced.iter().map(|produced| produced.topic.clone()));
        for topic in all {
            let next = topics.len();
            topics.entry(topic).or_insert_with(|| format!("t{next}"));
        }
        let stages = (0..self.config.stages.len())
            .map(|index| format!("s{index}"))
            .collect();
        NodeNames { topics, stages }
    }
}

/// How a topic is drawn.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TopicKind {
    /// Fed from outside the graph.
    Source,
    /// Written only as dead letters.
    DeadLetters,
    /// Any other topic.
    Plain,
}

/// A language the graph is drawn in; each method returns whole lines.
trait Language {
    fn start(&self) -> String;
    fn topic(&self, id: &str, name: &str, kind: TopicKind) -> String;
    fn stage(&self, id: &str, name: &str, handlers: &str) -> String;
    /// An edge: a stage's input when `link` is `None`, else what it writes.
    fn edge(&self, from: &str, to: &str, link: Option<&Link>) -> String;
    fn end(&self) -> &'static str;
}

struct Mermaid;

impl Language for Mermaid {
    fn start(&self) -> String {
        "flowchart LR\n".into()
    }

    fn topic(&self, id: &str, name: &str, kind: TopicKind) -> String {
        match kind {
            TopicKind::Source => format!("    {id}[/\"{name}\"/]\n"),
            TopicKind::DeadLetters | TopicKind::Plain => format!("    {id}([\"{name}\"])\n"),
        }
    }

    fn stage(&self, id: &str, name: &str, handlers: &str) -> String {
        format!("    {id}[\"<b>{name}</b><br/>{handlers}\"]\n")
    }

    fn edge(&self, from: &str, to: &str, link: Option<&Link>) -> String {
        match link {
            None | Some(Link::Output) => format!("    {from} --> {to}\n"),
            Some(Link::Branch(name)) => format!("    {from} -- \"{name}\" --> {to}\n"),
            Some(Link::DeadLetter) => format!("    {from} -. \"dead letter\" .-> {to}\n"),
        }
    }

    fn end(&self) -> &'static str {
        ""
    }
}

struct Dot;

impl Language for Dot {
    fn start(&self) -> String {
        "digraph pipeline {\n    rankdir=LR;\n    node [fontname=\"Helvetica\", fontsize=11];\n    edge [fontname=\"Helvetica\", fontsize=10];\n".into()
    }

    fn topic(&self, id: &str, name: &str, kind: TopicKind) -> String {
        let style = match kind {
            TopicKind::Source => "shape=cds, style=filled, fillcolor=\"#dbeafe\"",
            TopicKind::DeadLetters => "shape=note, style=filled, fillcolor=\"#fee2e2\"",
            TopicKind::Plain => "shape=note, style=filled, fillcolor=\"#f3f4f6\"",
        };
        format!("    {id} [label=\"{name}\", {style}];\n")
    }

    fn stage(&self, id: &str, name: &str, handlers: &str) -> String {
        format!(
            "    {id} [label=<<b>{name}</b><br/><font point-size=\"9\">{handlers}</font>>, shape=box, style=\"rounded,filled\", fillcolor=\"#dcfce7\"];\n"
        )
    }

    fn edge(&self, from: &str, to: &str, link: Option<&Link>) -> String {
        match link {
            None | Some(Link::Output) => format!("    {from} -> {to};\n"),
            Some(Link::Branch(name)) => format!("    {from} -> {to} [label=\"{name}\"];\n"),
            Some(Link::DeadLetter) => {
                format!("    {from} -> {to} [style=dashed, color=\"#b91c1c\"];\n")
            }
        }
    }

    fn end(&self) -> &'static str {
        "}\n"
    }
}

struct NodeNames {
    topics: BTreeMap<String, String>,
    stages: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pipeline of these stages and sources, unchecked (so that it may
    /// hold a cycle).
    fn config(stages: &str, sources: &str) -> Pipeline {
        let file: crate::config::file::Config = serde_yaml::from_str(&format!(
            "kafka: {{brokers: b}}\nhandlers: {{h: {{path: h.wasm}}}}\n{sources}\nstages:\n{stages}"
        ))
        .expect("test config parses");
        let stages = file
            .stages
            .iter()
            .map(|stage| crate::config::StagePlan {
                name: stage.name.clone(),
                input: stage.input.clone(),
                output: stage.output.clone(),
                dead_letter: stage.dead_letter.clone(),
                branches: stage.branches.clone(),
                allowed_topics: Default::default(),
                parallelism: None,
                max_batch: crate::config::DEFAULT_MAX_BATCH,
                propagate_headers: Default::default(),
                group: stage.name.clone(),
                routing: match &stage.route {
                    Some(route) => Routing::ByField {
                        field: route.field.clone(),
                        to: route.to.clone(),
                    },
                    None => Routing::Single(stage.handler.clone().unwrap_or_default()),
                },
                retry: crate::config::RetryPolicy {
                    max_attempts: std::num::NonZeroU32::MIN,
                    initial_backoff: Default::default(),
                    max_backoff: Default::default(),
                },
                state: None,
            })
            .collect();
        Pipeline {
            kafka: crate::config::KafkaSettings {
                brokers: crate::config::Brokers::Servers("b".into()),
                properties: Default::default(),
                topics: crate::config::TopicCreation {
                    create: false,
                    partitions: 1,
                    replication_factor: None,
                },
                delivery: crate::config::Delivery::AtLeastOnce,
            },
            admin: crate::config::AdminSettings {
                listen: None,
                token: None,
            },
            handlers: Default::default(),
            stages,
            sources: file.sources,
            data_dir: Default::default(),
        }
    }

    fn stage(name: &str, input: &str, output: &str) -> String {
        format!(
            "  - {{name: {name}, input: {input}, output: {output}, dead_letter: dlq, handler: h}}\n"
        )
    }

    #[test]
    fn a_chain_with_fan_out_has_no_cycle_and_one_source() {
        let stages = [
            stage("a", "in", "t1"),
            stage("b", "t1", "t2"),
            stage("c", "t2", "t3"),
            stage("d", "t2", "t4"),
        ]
        .concat();
        let config = config(&stages, "");
        let graph = Graph::of(&config);
        assert_eq!(graph.cycle(), None);
        assert_eq!(graph.sources(), BTreeSet::from(["in"]));
        assert!(graph.dangling().is_empty());
    }

    #[test]
    fn a_cycle_is_named_stage_by_stage() {
        let stages = [
            stage("a", "in", "t1"),
            stage("b", "t1", "t2"),
            stage("c", "t2", "t1"),
        ]
        .concat();
        let config = config(&stages, "");
        let graph = Graph::of(&config);
        let cycle = graph.cycle().expect("b and c feed each other");
        assert_eq!(graph.describe_cycle(&cycle), "b → (t2) → c → (t1) → b");
    }

    #[test]
    fn a_branch_back_to_an_earlier_stage_is_a_cycle() {
        let stages = [
            stage("a", "in", "t1"),
            "  - {name: b, input: t1, output: t2, dead_letter: dlq, handler: h, branches: {retry: in}}\n"
                .to_string(),
        ]
        .concat();
        let config = config(&stages, "");
        let graph = Graph::of(&config);
        let cycle = graph.cycle().expect("b's branch feeds a");
        assert_eq!(graph.describe_cycle(&cycle), "a → (t1) → b → (in) → a");
    }

    #[test]
    fn with_sources_an_input_nobody_feeds_dangles() {
        let stages = [stage("a", "in", "t1"), stage("b", "t_1", "t2")].concat();
        let config = config(&stages, "sources: [in]");
        let graph = Graph::of(&config);
        assert_eq!(
            graph.dangling(),
            vec![Dangling {
                stage: 1,
                topic: "t_1".into()
            }]
        );
    }

    #[test]
    fn drawings_name_every_stage_topic_and_branch() {
        let stages = [
            stage("a", "in", "t1"),
            "  - {name: b, input: t1, output: t2, dead_letter: dlq, branches: {large: alerts}, route: {to: {sum: h}}}\n"
                .to_string(),
        ]
        .concat();
        let config = config(&stages, "sources: [in]");
        let graph = Graph::of(&config);
        let mermaid = graph.mermaid();
        let dot = graph.dot();
        for drawing in [&mermaid, &dot] {
            for word in [
                "\"in\"",
                "\"t1\"",
                "\"t2\"",
                "\"alerts\"",
                "\"dlq\"",
                "large",
                "operation: sum → h",
            ] {
                assert!(drawing.contains(word), "{word} missing from\n{drawing}");
            }
        }
        assert!(mermaid.starts_with("flowchart LR\n"));
        assert!(mermaid.contains("-. \"dead letter\" .->"));
        assert!(dot.starts_with("digraph pipeline {") && dot.ends_with("}\n"));
        // One node per topic, even when several stages write the same one.
        assert_eq!(dot.matches("label=\"dlq\"").count(), 1);
    }
}
