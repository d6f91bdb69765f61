//! [`Workflow`]: a graph of ordinary jobs whose edges say when a node may run: after another
//! succeeded (the default), after it failed for good (compensation), or after it ended
//! whatever happened (`finally`).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::de::DeserializeOwned;

use crate::dispatch::PendingDispatch;
use crate::dispatcher::{self, Dispatcher};
use crate::envelope::{After, SkipIf, Step};
use crate::error::{Error, Result};
use crate::storage::{new_token, Effect, Unique, WaitingJob};

/// When an edge lets its node run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edge {
    /// The node before succeeded.
    Succeeded,
    /// The node before failed for good.
    Failed,
    /// The node before ended, whatever happened (succeeded, failed or skipped).
    Ended,
}

/// What a node runs.
#[derive(Debug)]
enum NodeJob {
    /// One job.
    Job(Box<PendingDispatch>),
    /// A batch: the node ends once every member has ended.
    Batch(Box<crate::Batch>),
}

#[derive(Debug)]
struct NodeData {
    name: String,
    job: NodeJob,
    /// Edges into this node: (the node before, when).
    before: Vec<(usize, Edge)>,
}

#[derive(Debug, Default)]
struct Graph {
    nodes: Vec<NodeData>,
    /// The first mistake made while building (reported by `dispatch`).
    mistake: Option<String>,
}

/// A workflow: a directed acyclic graph of jobs (a DAG), dispatched as one.
///
/// Every node is stored at dispatch in one atomic step: the nodes with no edge into them in
/// their queues, the others as waiting jobs that count the nodes before them. The step that
/// settles a node for good counts it down in each node after it, so a node becomes available
/// by the finishing step itself, never by polling, and no crash can release it twice or
/// lose it. An edge says what it needs of the node before:
///
/// - [`after`](Node::after): that it succeeded (the default);
/// - [`on_failure_of`](Node::on_failure_of): that it failed for good (compensation);
/// - [`on_complete_of`](Node::on_complete_of): only that it ended (`finally`).
///
/// A node runs once every node before it has ended and every edge into it is met. When one
/// is not met (the node before failed, or was skipped, where success was needed), the node
/// is **skipped**: it never runs, and it counts as ended for the nodes after it, so the skip
/// goes on down the edges that needed success or failure, and `finally` nodes still run.
/// Cycles, duplicate node names and edges to nodes of another workflow are refused at
/// dispatch.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
/// use queue_core::{Queue, StorageExt, Workflow};
///
/// let queue = Queue::connect("memory://").await?;
/// let job = |name: &str| queue.dispatch_named(name, serde_json::json!({"order": 42}));
/// let wf = Workflow::new();
/// let reserve = wf.add("reserve", job("reserve-stock"));
/// let charge = wf.add("charge", job("charge-card")).after(&reserve);
/// let email = wf.add("email", job("send-receipt")).after(&reserve);
/// wf.add("ship", job("ship")).after_all([&charge, &email]);
/// wf.add("refund", job("refund")).on_failure_of(&charge);
/// wf.add("audit", job("audit")).on_complete_of_all([&charge, &email]);
/// let id = wf.via(&queue).dispatch().await?;
///
/// // Only `reserve` is in a queue; the others wait for the nodes before them.
/// assert_eq!(queue.storage().inspect()?.size("default").await?.total(), 1);
/// let status = Workflow::status(&queue, &id).await?;
/// assert_eq!((status.nodes, status.is_finished()), (6, false));
/// # Ok(()) }
/// ```
///
/// Workflows need the store's [groups](crate::storage::Groups) capability (waiting jobs and
/// counters), as [`Chain`](crate::Chain)s do; Redis Cluster and memcached refuse them.
#[derive(Debug, Default)]
#[must_use = "a workflow does nothing until it is dispatched"]
pub struct Workflow {
    graph: Arc<Mutex<Graph>>,
    via: Option<Dispatcher>,
}

/// A node of a [`Workflow`]: add edges into it with its methods.
#[derive(Debug, Clone)]
pub struct Node {
    graph: Arc<Mutex<Graph>>,
    index: usize,
}

/// A dispatched workflow's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkflowId(pub String);

impl fmt::Display for WorkflowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How far a workflow got: counts of its nodes (never of attempts), from the store's
/// counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct WorkflowStatus {
    /// Nodes in the workflow.
    pub nodes: u64,
    /// Nodes that succeeded.
    pub succeeded: u64,
    /// Nodes that failed for good.
    pub failed: u64,
    /// Nodes skipped because an edge into them was not met.
    pub skipped: u64,
    /// When it was dispatched, to the second (`None` for a workflow dispatched before this
    /// was kept).
    pub created_at: Option<SystemTime>,
}

impl WorkflowStatus {
    /// Whether every node has ended (succeeded, failed or skipped).
    pub fn is_finished(&self) -> bool {
        self.nodes > 0 && self.succeeded + self.failed + self.skipped >= self.nodes
    }
}

fn lock(graph: &Mutex<Graph>) -> std::sync::MutexGuard<'_, Graph> {
    graph.lock().unwrap_or_else(|p| p.into_inner())
}

impl Node {
    fn edge(self, before: &Node, edge: Edge) -> Node {
        let mut graph = lock(&self.graph);
        if !Arc::ptr_eq(&self.graph, &before.graph) {
            if graph.mistake.is_none() {
                let name = &graph.nodes[self.index].name;
                graph.mistake = Some(format!(
                    "node `{name}` has an edge from a node of another workflow"
                ));
            }
        } else {
            graph.nodes[self.index].before.push((before.index, edge));
        }
        drop(graph);
        self
    }

    /// Runs this node only after `before` succeeded.
    pub fn after(self, before: &Node) -> Node {
        self.edge(before, Edge::Succeeded)
    }

    /// Runs this node only after every one of `before` succeeded.
    pub fn after_all<'a>(self, before: impl IntoIterator<Item = &'a Node>) -> Node {
        before
            .into_iter()
            .fold(self, |node, b| node.edge(b, Edge::Succeeded))
    }

    /// Runs this node only if `before` failed for good (a compensation).
    pub fn on_failure_of(self, before: &Node) -> Node {
        self.edge(before, Edge::Failed)
    }

    /// Runs this node once `before` has ended, whatever happened (a `finally`).
    pub fn on_complete_of(self, before: &Node) -> Node {
        self.edge(before, Edge::Ended)
    }

    /// Runs this node once every one of `before` has ended, whatever happened.
    pub fn on_complete_of_all<'a>(self, before: impl IntoIterator<Item = &'a Node>) -> Node {
        before
            .into_iter()
            .fold(self, |node, b| node.edge(b, Edge::Ended))
    }

    /// The node's name.
    pub fn name(&self) -> String {
        lock(&self.graph).nodes[self.index].name.clone()
    }
}

impl Workflow {
    /// An empty workflow.
    pub fn new() -> Self {
        Workflow::default()
    }

    /// Adds a node: a typed job or a dispatch with its options, under a name unique in the
    /// workflow (letters, digits, `-`, `_`, `.`; at most 100). With no edge into it, it runs
    /// at once. A `.via(..)` on the job is ignored: the workflow's own applies.
    pub fn add(&self, name: impl Into<String>, job: impl Into<PendingDispatch>) -> Node {
        self.add_node(name.into(), NodeJob::Job(Box::new(job.into())))
    }

    /// Adds a [`Batch`](crate::Batch) as one node: its members are released once the node's
    /// edges are met (by a small start job of this crate, on the queue of the first member),
    /// and the node ends once every member has ended: succeeded if every one succeeded,
    /// failed otherwise (a member failed for good, or was cancelled), so `on_failure_of`
    /// compensates a batch as a job. Its `then` and `catch` run as in any batch; its
    /// `finally` is the node's end (a batch with one is refused: use `on_complete_of`), and
    /// a batch with no member is refused. A skipped batch node's members never run and are
    /// counted cancelled. `Workflow::status` counts it as one node; `Batch::status` of its
    /// id (`runall job` of a member names it) gives its members.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
    /// use queue_core::{Batch, Queue, Workflow};
    ///
    /// let queue = Queue::connect("memory://").await?;
    /// let job = |name: &str| queue.dispatch_named(name, serde_json::json!({}));
    /// let wf = Workflow::new();
    /// let fetch = wf.add("fetch", job("fetch-students"));
    /// let sync = wf
    ///     .add_batch("sync", Batch::new().add_many((0..3).map(|_| job("sync-payment"))))
    ///     .after(&fetch);
    /// wf.add("report", job("report")).after(&sync);
    /// wf.add("alert", job("alert")).on_failure_of(&sync);
    /// let id = wf.via(&queue).dispatch().await?;
    /// assert_eq!(Workflow::status(&queue, &id).await?.nodes, 4);
    /// # Ok(()) }
    /// ```
    pub fn add_batch(&self, name: impl Into<String>, batch: crate::Batch) -> Node {
        self.add_node(name.into(), NodeJob::Batch(Box::new(batch)))
    }

    fn add_node(&self, name: String, job: NodeJob) -> Node {
        let mut graph = lock(&self.graph);
        let valid = !name.is_empty()
            && name.len() <= 100
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if graph.mistake.is_none() {
            if !valid {
                graph.mistake = Some(format!(
                    "invalid node name `{name}`: use letters, digits, `-`, `_` and `.`, at most 100 characters"
                ));
            } else if graph.nodes.iter().any(|n| n.name == name) {
                graph.mistake = Some(format!("two nodes are named `{name}`"));
            }
        }
        graph.nodes.push(NodeData {
            name,
            job,
            before: Vec::new(),
        });
        Node {
            graph: self.graph.clone(),
            index: graph.nodes.len() - 1,
        }
    }

    /// Dispatches through `queue` instead of the default one.
    pub fn via(mut self, queue: impl AsRef<Dispatcher>) -> Self {
        self.via = Some(queue.as_ref().clone());
        self
    }

    /// Checks the graph and stores every node in one atomic step; returns the workflow's id.
    pub async fn dispatch(mut self) -> Result<WorkflowId> {
        let dispatcher = dispatcher::resolve(self.via.take())?;
        let nodes = {
            let mut graph = lock(&self.graph);
            if let Some(mistake) = graph.mistake.take() {
                return Err(Error::Config(format!("workflow refused: {mistake}")));
            }
            std::mem::take(&mut graph.nodes)
        };
        if nodes.is_empty() {
            return Err(Error::Config("a workflow needs at least one node".into()));
        }
        check_acyclic(&nodes)?;
        dispatcher.needs_groups("workflows (they need waiting jobs)")?;
        let id = new_token();
        let effects = effects(&id, nodes, &dispatcher)?;
        let recorded = dispatcher
            .fake()
            .map(|fake| (fake.clone(), effects.clone()));
        dispatcher.apply(effects).await?;
        if let Some((fake, effects)) = recorded {
            fake.record_workflow(&id, &effects, dispatcher.settings());
        }
        Ok(WorkflowId(id))
    }

    /// The output node `node` of the workflow `id` set ([`JobContext::output`]), kept by the step in which it
    /// succeeded, through `queue`: `None` if it has not succeeded (yet) or returned none.
    /// Kept until the workflow's counters are deleted. [`Error::Payload`] when it does not
    /// read as a `T`.
    ///
    /// [`JobContext::output`]: crate::JobContext::output
    pub async fn output<T: DeserializeOwned>(
        queue: impl AsRef<Dispatcher>,
        id: &WorkflowId,
        node: &str,
    ) -> Result<Option<T>> {
        read_output(queue.as_ref(), &id.0, node).await
    }

    /// How far the workflow `id` got, through `queue` (a [`Queue`](crate::Queue) or a
    /// [`Dispatcher`]). [`Error::NotFound`] for a workflow the store knows nothing of.
    pub async fn status(queue: impl AsRef<Dispatcher>, id: &WorkflowId) -> Result<WorkflowStatus> {
        let counters = queue.as_ref().counters(&group(&id.0)).await?;
        let get = |name: &str| counters.count(name);
        if get("nodes") == 0 {
            return Err(Error::NotFound {
                what: "workflow",
                id: id.0.clone(),
            });
        }
        Ok(WorkflowStatus {
            nodes: get("nodes"),
            succeeded: get("succeeded"),
            failed: get("failed"),
            skipped: get("skipped"),
            created_at: crate::batch::created_at(counters.get("created")),
        })
    }

    /// Deletes the workflows dispatched before `before` that have finished, with their
    /// counters and their nodes' outputs; returns how many (`runall workflow
    /// --prune-older-than 7d`). A workflow dispatched before its time was kept counts as
    /// old. Unfinished ones stay: their nodes still wait or run.
    pub async fn prune(queue: impl AsRef<Dispatcher>, before: SystemTime) -> Result<u64> {
        let queue = queue.as_ref();
        let groups = queue.groups()?;
        crate::batch::each_group(groups, PREFIX, async |name: &str, id: &str| {
            let status = match Workflow::status(queue, &WorkflowId(id.to_owned())).await {
                Ok(status) => status,
                Err(Error::NotFound { .. }) => return Ok(false),
                Err(e) => return Err(e),
            };
            let old = status.created_at.is_none_or(|at| at < before);
            Ok(old && status.is_finished() && groups.remove(name).await?)
        })
        .await
    }
}

/// What every workflow's group name starts with.
const PREFIX: &str = "wf:";

pub(crate) fn group(id: &str) -> String {
    format!("{PREFIX}{id}")
}

/// The group of the workflow whose node's envelope carries `after`, if it is one.
pub(crate) fn group_of(after: &After) -> Option<String> {
    let of = crate::status::Group::of(after)?;
    (of.kind == crate::status::GroupKind::Workflow).then(|| group(&of.id))
}

/// Reads the output node `node` of workflow `id` kept.
async fn read_output<T: DeserializeOwned>(
    dispatcher: &Dispatcher,
    id: &str,
    node: &str,
) -> Result<Option<T>> {
    let Some(raw) = dispatcher.groups()?.value(&group(id), node).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&raw).map(Some).map_err(|e| {
        Error::Payload(format!(
            "the output of node `{node}` of workflow {id} does not read as the type asked for: {e}"
        ))
    })
}

/// The workflow of the node a job is, from inside the job ([`JobContext::workflow`]): its
/// id, the node's name, and the outputs of the nodes before it.
///
/// [`JobContext::workflow`]: crate::JobContext::workflow
#[derive(Debug, Clone)]
pub struct CurrentWorkflow {
    id: WorkflowId,
    node: String,
    dispatcher: Dispatcher,
}

impl CurrentWorkflow {
    /// The workflow of a node whose envelope carries `after`, if it is one.
    pub(crate) fn of(after: &After, dispatcher: &Dispatcher) -> Option<CurrentWorkflow> {
        let node = after.node.clone()?;
        let of = crate::status::Group::of(after)?;
        (of.kind == crate::status::GroupKind::Workflow).then(|| CurrentWorkflow {
            id: WorkflowId(of.id),
            node,
            dispatcher: dispatcher.clone(),
        })
    }

    /// The workflow's id.
    pub fn id(&self) -> &WorkflowId {
        &self.id
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The output of node `node` of this workflow ([`JobContext::output`]), kept by the
    /// step in which it succeeded: `None` if it has not succeeded (yet) or kept no output.
    /// A node after it reads it for sure, since that step is the one that lets it run.
    /// [`Error::Payload`] when it does not read as a `T`.
    ///
    /// [`JobContext::output`]: crate::JobContext::output
    pub async fn output<T: DeserializeOwned>(&self, node: &str) -> Result<Option<T>> {
        read_output(&self.dispatcher, &self.id.0, node).await
    }

    /// How far the workflow got.
    pub async fn status(&self) -> Result<WorkflowStatus> {
        Workflow::status(&self.dispatcher, &self.id).await
    }

    /// The dispatcher the job runs with.
    pub(crate) fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }
}

/// Refuses a graph with a cycle (Kahn's algorithm), naming a node on it.
fn check_acyclic(nodes: &[NodeData]) -> Result<()> {
    let mut left: Vec<usize> = nodes.iter().map(|n| n.before.len()).collect();
    let mut after: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, node) in nodes.iter().enumerate() {
        for &(b, _) in &node.before {
            after[b].push(i);
        }
    }
    let mut ready: VecDeque<usize> = (0..nodes.len()).filter(|&i| left[i] == 0).collect();
    let mut seen = 0;
    while let Some(i) = ready.pop_front() {
        seen += 1;
        for &j in &after[i] {
            left[j] -= 1;
            if left[j] == 0 {
                ready.push_back(j);
            }
        }
    }
    match left.iter().position(|&l| l > 0) {
        Some(i) if seen < nodes.len() => Err(Error::Config(format!(
            "workflow refused: it has a cycle through node `{}`",
            nodes[i].name
        ))),
        _ => Ok(()),
    }
}

/// What dispatching stores. Each node's envelope says, per way it can end, what its settle
/// step does to the nodes after it: every edge out of it is counted down (the node after
/// waits for all the nodes before it to end), and an edge it did not meet marks the node
/// after it to be skipped (a counter the worker reads before running that node).
fn effects(id: &str, nodes: Vec<NodeData>, dispatcher: &Dispatcher) -> Result<Vec<Effect>> {
    let group = group(id);
    let key = |name: &str| format!("wf:{id}:{name}");
    let doom = |name: &str| format!("skip:{name}");
    let mut out_edges: BTreeMap<usize, Vec<(usize, Edge)>> = BTreeMap::new();
    for (i, node) in nodes.iter().enumerate() {
        for &(b, edge) in &node.before {
            out_edges.entry(b).or_default().push((i, edge));
        }
    }
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let count = |what: &str| Step::Count {
        group: group.clone(),
        deltas: vec![(what.to_owned(), 1)],
    };
    let settings = dispatcher.settings();
    let total = nodes.len();
    let mut effects = Vec::with_capacity(total + 1);
    for (i, node) in nodes.into_iter().enumerate() {
        let outs = out_edges.remove(&i).unwrap_or_default();
        let ending = |how: Option<Edge>| {
            let mut steps = Vec::new();
            for &(j, edge) in &outs {
                let met = match how {
                    Some(Edge::Succeeded) => edge != Edge::Failed,
                    Some(Edge::Failed) => edge != Edge::Succeeded,
                    // Skipped: only an edge that needs nothing but the end is met.
                    _ => edge == Edge::Ended,
                };
                if !met {
                    steps.push(Step::Count {
                        group: group.clone(),
                        deltas: vec![(doom(&names[j]), 1)],
                    });
                }
                steps.push(Step::Deps {
                    key: key(&names[j]),
                    delta: -1,
                });
            }
            steps
        };
        let mut after = After {
            succeeded: ending(Some(Edge::Succeeded)),
            failed: ending(Some(Edge::Failed)),
            skipped: ending(None),
            ..After::default()
        };
        after.succeeded.push(count("succeeded"));
        after.failed.push(count("failed"));
        after.skipped.push(count("skipped"));
        after.node = Some(node.name.clone());
        let deps = node.before.len();
        let job = match node.job {
            NodeJob::Job(job) => {
                if deps > 0 {
                    after.skip_if = Some(SkipIf {
                        group: group.clone(),
                        counter: doom(&node.name),
                        loose: false,
                    });
                }
                job.encode_with(settings, Some(after))?
            }
            NodeJob::Batch(batch) => {
                let (succeeded, failed) = (after.succeeded.clone(), after.failed.clone());
                let end = |_: &crate::BatchId, queue: &str| {
                    PendingDispatch::from(crate::batch_node::BatchNodeEnd {
                        group: group.clone(),
                        node: node.name.clone(),
                        succeeded,
                        failed,
                    })
                    .on_queue(queue)
                };
                let stored = batch.node_effects(dispatcher, &node.name, end)?;
                effects.extend(stored.effects);
                let start = crate::batch_node::BatchNodeStart {
                    batch: stored.id.0,
                    members: stored.members.len() as u64,
                    node: node.name.clone(),
                    skipped: std::mem::take(&mut after.skipped),
                    callbacks: stored.callbacks,
                };
                // Its own end changes nothing (the start and end jobs apply the node's steps)
                // but when it fails for good: the node then fails.
                let after = After {
                    failed: std::mem::take(&mut after.failed),
                    node: Some(node.name.clone()),
                    ..After::default()
                };
                PendingDispatch::from(start)
                    .on_queue(stored.queue)
                    .encode_with(settings, Some(after))?
            }
        };
        effects.push(if deps == 0 {
            Effect::Push(job.unique(Unique::new(key(&node.name))))
        } else {
            Effect::Hold(WaitingJob::new(
                key(&node.name),
                u32::try_from(deps).unwrap_or(u32::MAX),
                job,
            ))
        });
    }
    effects.push(Effect::Count {
        group,
        deltas: vec![
            ("created".to_owned(), crate::batch::created_now()),
            ("nodes".to_owned(), total as i64),
        ],
    });
    Ok(effects)
}
