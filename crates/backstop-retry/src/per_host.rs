//! Per-host retry budgets ([`RetryLayerBuilder::budget_per_host`](crate::RetryLayerBuilder::budget_per_host)):
//! a bounded map from authority to budget, so one failing host cannot spend the others' retries.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use http::request::Parts;
use http::uri::Authority;

use crate::ConfigError;
use crate::budget::{RetryBudget, RetryBudgetBuilder};

/// The most hosts given a budget of their own; the rest share the overflow budget, so a client
/// calling unbounded host names cannot grow the map without limit.
const MAX_HOSTS: usize = 10_000;

/// A budget per host, built from one template; hosts beyond [`MAX_HOSTS`] share the overflow
/// budget.
pub(crate) struct PerHost {
    template: RetryBudgetBuilder,
    budgets: Mutex<HashMap<Authority, RetryBudget>>,
    overflow: RetryBudget,
}

impl PerHost {
    /// Budgets built like `template`, which is checked here, once.
    pub(crate) fn new(template: RetryBudgetBuilder) -> Result<PerHost, ConfigError> {
        Ok(PerHost {
            overflow: template.clone().build()?,
            template,
            budgets: Mutex::new(HashMap::new()),
        })
    }

    /// The template every host's budget is built from.
    pub(crate) fn template(&self) -> &RetryBudgetBuilder {
        &self.template
    }

    /// The budget of the request's host (the URI's authority, else its `Host` header).
    pub(crate) fn budget_for(&self, parts: &Parts) -> RetryBudget {
        let authority = parts.uri.authority().cloned().or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|host| Authority::try_from(host.as_bytes()).ok())
        });
        let Some(authority) = authority else {
            return self.overflow.clone();
        };
        let mut budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(budget) = budgets.get(&authority) {
            return budget.clone();
        }
        if budgets.len() >= MAX_HOSTS {
            return self.overflow.clone();
        }
        // The template was validated when the layer was built.
        let budget = self
            .template
            .clone()
            .build()
            .unwrap_or_else(|_| self.overflow.clone());
        budgets.insert(authority, budget.clone());
        budget
    }
}
