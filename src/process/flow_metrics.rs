//! Flow and step metrics from the engine's events: an engine [`Listener`] on every engine
//! and worker of the process (the engine itself records nothing).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use ember_engine::state::{AtomState, FlowState};
use ember_engine::{Event, Listener};
use parking_lot::Mutex;

/// Runs tracked at once before the oldest are forgotten: a run abandoned without an end
/// event (its lease lost) must not keep its entry forever.
const MAX_TRACKED: usize = 10_000;

/// What is known of one flow running in this process.
struct Run {
    started: Instant,
    /// When each atom's current execute or revert began.
    steps: HashMap<Arc<str>, Instant>,
}

impl Run {
    fn new() -> Self {
        Self { started: Instant::now(), steps: HashMap::new() }
    }
}

/// Records `ember_flows_*` and `ember_flow_*` (see `metrics::FAMILIES`).
#[derive(Default)]
pub struct FlowMetrics {
    runs: Mutex<HashMap<Arc<str>, Run>>,
}

impl FlowMetrics {
    fn on_flow(&self, flow_id: &Arc<str>, flow: &str, from: FlowState, to: FlowState) {
        let mut runs = self.runs.lock();
        let label = [("flow", flow.to_owned())];
        if to == FlowState::Running {
            let name = match from {
                FlowState::Pending => "ember_flows_started_total",
                _ => "ember_flows_resumed_total",
            };
            metrics::counter!(name, &label).increment(1);
            track(&mut runs, flow_id);
            return;
        }
        if !runs.contains_key(flow_id) && from == FlowState::Running {
            // A flow that ends at once when taken over (its last step had run).
            metrics::counter!("ember_flows_taken_over_total", &label).increment(1);
        }
        let name = match to {
            FlowState::Success => "ember_flows_succeeded_total",
            FlowState::Reverted => "ember_flows_reverted_total",
            FlowState::Failure => "ember_flows_failed_total",
            FlowState::Suspended => {
                runs.remove(flow_id);
                return;
            }
            _ => return,
        };
        metrics::counter!(name, &label).increment(1);
        if let Some(run) = runs.remove(flow_id) {
            let labels = [("flow", flow.to_owned()), ("state", to.as_str().to_owned())];
            metrics::histogram!("ember_flow_duration_seconds", &labels)
                .record(run.started.elapsed().as_secs_f64());
        }
    }

    fn on_atom(&self, flow_id: &Arc<str>, flow: &str, atom: &Arc<str>, to: AtomState) {
        let mut runs = self.runs.lock();
        if !runs.contains_key(flow_id) {
            // The flow was RUNNING in the store when this process took it: no flow
            // transition announced it (a dead owner's, a lapsed lease, an earlier life's).
            metrics::counter!("ember_flows_taken_over_total", "flow" => flow.to_owned()).increment(1);
            track(&mut runs, flow_id);
        }
        let Some(run) = runs.get_mut(flow_id) else { return };
        if matches!(to, AtomState::Running | AtomState::Reverting) {
            run.steps.insert(atom.clone(), Instant::now());
            return;
        }
        let phase = match to {
            AtomState::Failure => Some("execute"),
            AtomState::RevertFailure => Some("revert"),
            _ => None,
        };
        if let Some(phase) = phase {
            let labels = [("flow", flow.to_owned()), ("step", atom.to_string()), ("phase", phase.to_owned())];
            metrics::counter!("ember_flow_step_failures_total", &labels).increment(1);
        }
        if let Some(began) = run.steps.remove(atom) {
            let labels =
                [("flow", flow.to_owned()), ("step", atom.to_string()), ("state", to.as_str().to_owned())];
            metrics::histogram!("ember_flow_step_duration_seconds", &labels)
                .record(began.elapsed().as_secs_f64());
        }
    }
}

fn track(runs: &mut HashMap<Arc<str>, Run>, flow_id: &Arc<str>) {
    if runs.len() >= MAX_TRACKED
        && !runs.contains_key(flow_id)
        && let Some(oldest) = runs.iter().min_by_key(|(_, r)| r.started).map(|(id, _)| id.clone())
    {
        runs.remove(&oldest);
    }
    runs.entry(flow_id.clone()).or_insert_with(Run::new);
}

impl Listener for FlowMetrics {
    fn on_event(&self, event: &Event) {
        match event {
            Event::Flow { flow_id, flow, from, to } => self.on_flow(flow_id, flow, *from, *to),
            Event::Atom { flow_id, flow, atom, to, .. } => self.on_atom(flow_id, flow, atom, *to),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ember_engine::{Context, Engine, Failure, Flow, MemoryStore, Task, Values, async_trait};

    use super::*;
    use crate::process::metrics::Metrics;

    /// A step that sleeps, then succeeds or fails.
    struct Step(&'static str, u64, bool);

    #[async_trait]
    impl Task for Step {
        fn name(&self) -> &str {
            self.0
        }
        async fn execute(&self, _: &Context) -> Result<Values, Failure> {
            tokio::time::sleep(Duration::from_millis(self.1)).await;
            if self.2 { Err(Failure::new("test", "boom")) } else { Ok(Values::new()) }
        }
    }

    #[test]
    fn counts_flows_and_times_steps() {
        let recorder = Metrics::recorder();
        let handle = recorder.handle();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                let listener = Arc::new(FlowMetrics::default());
                let engine = Engine::new(Arc::new(MemoryStore::new())).with_listener(listener);
                let ok = Flow::linear("ok").add(Step("Slow", 20, false));
                engine.run(&ok.compile().unwrap(), Values::new()).await.unwrap();
                let bad = Flow::linear("bad").add(Step("First", 0, false)).add(Step("Boom", 0, true));
                assert!(engine.run(&bad.compile().unwrap(), Values::new()).await.is_err());
            })
        });
        let text = handle.render();
        for line in [
            "ember_flows_started_total{flow=\"ok\"} 1",
            "ember_flows_succeeded_total{flow=\"ok\"} 1",
            "ember_flows_started_total{flow=\"bad\"} 1",
            "ember_flows_reverted_total{flow=\"bad\"} 1",
            "ember_flow_step_failures_total{flow=\"bad\",step=\"Boom\",phase=\"execute\"} 1",
            "ember_flow_step_duration_seconds_count{flow=\"ok\",step=\"Slow\",state=\"SUCCESS\"} 1",
            "ember_flow_step_duration_seconds_bucket{flow=\"ok\",step=\"Slow\",state=\"SUCCESS\",le=\"0.01\"} 0",
            "ember_flow_step_duration_seconds_count{flow=\"bad\",step=\"First\",state=\"REVERTED\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("ember_flows_taken_over_total"), "{text}");
    }
}
