//! A two-task flow the `/flows` tests run on the real engine and SQL store: `measure`
//! provides a value, `attach` fails with a cause chain unless told to succeed.

use ember_engine::{Context, Failure, Flow, Key, Registry, Task, Values, async_trait};

/// The flow's name in the store and in the registry.
pub const FLOW: &str = "demo_flow";

/// Input: whether `attach` fails.
pub const FAIL: Key<bool> = Key::new("fail");

const SIZE: Key<u64> = Key::new("measured_size");

struct Measure;

#[async_trait]
impl Task for Measure {
    fn name(&self) -> &str {
        "measure"
    }

    fn provides(&self) -> &[&'static str] {
        &["measured_size"]
    }

    async fn execute(&self, _ctx: &Context) -> Result<Values, Failure> {
        Ok(Values::new().with(&SIZE, 42))
    }
}

struct Attach;

#[async_trait]
impl Task for Attach {
    fn name(&self) -> &str {
        "attach"
    }

    fn requires(&self) -> &[&'static str] {
        &["fail", "measured_size"]
    }

    async fn execute(&self, ctx: &Context) -> Result<Values, Failure> {
        if ctx.get(&FAIL)? {
            let mut f = Failure::new("AttachFailed", "the backend refused");
            f.causes.push("disk full".into());
            return Err(f);
        }
        Ok(Values::new())
    }
}

/// The flow.
pub fn flow() -> Flow {
    Flow::linear(FLOW).add(Measure).add(Attach)
}

/// A registry that knows the flow, for drawing.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(FLOW, |_: &Values| Ok(flow()));
    r
}
