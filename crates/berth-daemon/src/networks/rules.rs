//! berth's rules (NAT, published ports, isolation) applied as one whole per change,
//! kept in place beside the host's other firewalls, and taken away at a stop.

use super::*;

impl Networks {
    /// Replaces `table inet berth` with the rules for every network and held port.
    pub async fn apply_rules(&self) -> Result<(), EngineError> {
        let _g = self.rules.lock().await;
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let set = nft::Ruleset {
            table: self.table.clone(),
            bridges: self
                .all()
                .iter()
                .map(|n| nft::BridgeRules {
                    bridge: n.cfg.bridge.clone(),
                    subnet: n.subnet,
                    internal: n.cfg.internal,
                    masquerade: n.masquerade(),
                })
                .collect(),
            ports: self
                .ports
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .flatten()
                .map(|h| h.rule.clone())
                .collect(),
        };
        let Some(backend) = self.backend else {
            return Err(internal(
                "neither nft (nftables) nor iptables-restore is installed: no NAT or published ports",
            ));
        };
        let bridges: Vec<String> = set.bridges.iter().map(|b| b.bridge.clone()).collect();
        tokio::task::spawn_blocking(move || set.apply_with(backend))
            .await
            .map_err(internal)?
            .map_err(|e| internal(format!("applying network rules: {e}")))?;
        self.trust_bridges(&bridges).await;
        Ok(())
    }
    /// Binds this daemon's bridges to firewalld's trusted zone where firewalld runs
    /// (and unbinds those of networks gone).
    pub(super) async fn trust_bridges(&self, bridges: &[String]) {
        for (br, zone) in self.firewalld.sync(bridges).await {
            tracing::warn!(
                bridge = %br,
                %zone,
                "firewalld has this bridge in a zone of its administrator's: its traffic passes only as that zone allows"
            );
        }
    }
    /// Another program may make an iptables filter table (dockerd, with its FORWARD DROP
    /// policy) after berth applied its rules: every 10 s, when a host filter table lacks
    /// berth's jump, the rules are applied again. firewalld drops its runtime bindings
    /// when it reloads or restarts: its signals (and the same 10 s check) bind berth's
    /// bridges again.
    pub async fn watch_host_firewall(self: Arc<Self>) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut changes: Option<berth_network::firewalld::Changes> = None;
        loop {
            match changes.as_mut() {
                Some(c) => {
                    tokio::select! {
                        _ = tick.tick() => {}
                        alive = c.next() => if !alive {
                            changes = None;
                            self.firewalld.forget_bus().await;
                        } else {
                            tracing::info!("firewalld reloaded or restarted: binding berth's bridges again");
                        },
                    }
                }
                None => {
                    tick.tick().await;
                }
            }
            if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            if self.backend.is_none() || self.all().is_empty() {
                continue;
            }
            let t = self.table.clone();
            let missing = tokio::task::spawn_blocking(move || berth_network::hostfw::missing(&t))
                .await
                .unwrap_or(false);
            if missing {
                tracing::info!(
                    "a host iptables filter table lacks berth's accepts: putting them back"
                );
                if let Err(e) = self.apply_rules().await {
                    tracing::warn!(error = %e.message, "applying network rules");
                }
            } else {
                let _g = self.rules.lock().await;
                if !self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                    let bridges: Vec<String> =
                        self.all().iter().map(|n| n.cfg.bridge.clone()).collect();
                    self.trust_bridges(&bridges).await;
                }
            }
            if changes.is_none() {
                if let Some(bus) = self.firewalld.bus().await {
                    changes = berth_network::firewalld::Changes::subscribe(&bus)
                        .await
                        .ok();
                }
            }
        }
    }
    /// At daemon exit: berth's rules go with it; bridges and namespaces of running
    /// containers stay (they keep running).
    pub async fn shutdown(&self, any_running: bool) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let _g = self.rules.lock().await;
        if !any_running {
            if let Some(b) = self.backend {
                let t = self.table.clone();
                let _ = tokio::task::spawn_blocking(move || nft::remove_with(&t, b)).await;
            }
            self.firewalld.sync(&[]).await;
        }
    }
}
