//! The node's Cedar policies (docs/adr/0016-cedar-decides.md): the policy file or the
//! built-in defaults, plus the `[[dataplane.allow]]` rules as generated policies. Read at
//! start and by `trellis policy reload`; a file that does not load is refused with
//! `FILE:LINE:COL` and the policies in force stay.

use std::path::PathBuf;

use trellis_policy::access::AccessRules;
use trellis_policy::cedar::{Policies, PolicyError};
use trellis_routing::OrgId;

/// Where the node's policies come from.
#[derive(Debug, Clone)]
pub struct PolicySource {
    /// The policy file, if configured.
    pub file: Option<PathBuf>,
    /// The node's org.
    pub org: OrgId,
    /// The data plane's allow rules from the config, if any.
    pub allow: Option<AccessRules>,
    /// The peering configs' policy files (import and export filters), added to the rest.
    pub peering_files: Vec<PathBuf>,
}

fn read(path: &std::path::Path) -> Result<String, PolicyError> {
    std::fs::read_to_string(path).map_err(|e| PolicyError {
        file: path.display().to_string(),
        line: 1,
        column: 1,
        reason: format!("cannot read it: {e}"),
    })
}

impl PolicySource {
    /// Reads and validates the policies.
    ///
    /// - With a file: the file, plus the `[[dataplane.allow]]` rules if any.
    /// - Without: the defaults, plus the allow rules, or the own-org rule when there are
    ///   none (today's data-plane default).
    pub fn load(&self) -> Result<Policies, PolicyError> {
        let generated = match (&self.allow, &self.file) {
            (Some(rules), _) => rules.to_cedar(),
            (None, None) => AccessRules::own_org(&self.org).to_cedar(),
            (None, Some(_)) => String::new(),
        };
        // Each peering file is checked on its own first, so an error names its file.
        let mut peerings = String::new();
        for path in &self.peering_files {
            let text = read(path)?;
            Policies::load(&text, &path.display().to_string())?;
            peerings.push_str(&text);
            peerings.push('\n');
        }
        let extra = format!("{generated}\n{peerings}");
        let Some(path) = &self.file else {
            return Policies::defaults(&extra);
        };
        // The rest follows the file, so the file's line numbers stay right.
        let text = read(path)?;
        let label = path.display().to_string();
        Policies::load(&format!("{text}\n{extra}"), &label)
    }

    /// Whether routes need Cedar's filter: a policy file or a peering's policies exist
    /// (the defaults permit every route, so without them the filter is skipped).
    pub fn filters_routes(&self) -> bool {
        self.file.is_some() || !self.peering_files.is_empty()
    }
}

/// The policies in force at a node and where they come from.
#[derive(Debug)]
pub struct NodePolicy {
    shared: std::sync::Arc<trellis_policy::cedar::Shared>,
    source: PolicySource,
}

impl NodePolicy {
    /// Loads the policies; `Err` refuses the start.
    pub fn start(source: PolicySource) -> Result<Self, PolicyError> {
        let policies = source.load()?;
        Ok(Self {
            shared: std::sync::Arc::new(trellis_policy::cedar::Shared::new(policies)),
            source,
        })
    }

    /// The policies in force, for everything that asks.
    pub fn shared(&self) -> std::sync::Arc<trellis_policy::cedar::Shared> {
        self.shared.clone()
    }

    /// Whether routes go through Cedar's filter ([`PolicySource::filters_routes`]).
    pub fn filters_routes(&self) -> bool {
        self.source.filters_routes()
    }

    /// The node's org.
    pub fn org(&self) -> &str {
        self.source.org.as_str()
    }

    /// Reads the policies again and puts them in force (with an empty decision cache);
    /// on error the policies in force stay.
    pub fn reload(&self) -> Result<crate::admin::PolicyLoaded, PolicyError> {
        let policies = self.source.load()?;
        let loaded = crate::admin::PolicyLoaded {
            source: policies.source().to_owned(),
            policies: policies.len(),
        };
        self.shared.replace(policies);
        tracing::info!(source = %loaded.source, policies = loaded.policies, "policies reloaded");
        Ok(loaded)
    }
}
