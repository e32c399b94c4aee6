//! The vim25 calls the provisioner makes, over one session: the service
//! content, login and logout, inventory lookups through a ContainerView and
//! the PropertyCollector, and waiting for tasks with `WaitForUpdatesEx`.
//!
//! A session that ends (`NotAuthenticated`: an idle timeout, a restarted
//! vCenter, an admin's TerminateSession) is renewed once per load. What
//! the old session made goes with it: a property filter, a container
//! view, a continuation token. So a wait for a task makes its filter anew
//! in the new session (whose first update is the task's whole state: a
//! task that finished meanwhile is seen at once), and a lookup makes its
//! view anew.

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::soap::{self, Class, Client, Elem, Error, MoRef};
use crate::report::Reporter;
use crate::secret::Secret;
use crate::xml::escape;

/// Longest `maxWaitSeconds` of one WaitForUpdatesEx: long enough not to
/// busy-poll, short enough that a stuck server is noticed.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// What `RetrieveServiceContent` says about the endpoint.
#[derive(Debug, Clone)]
pub struct About {
    /// `VirtualCenter` or `HostAgent`.
    pub api_type: String,
    pub full_name: String,
    pub api_version: String,
}

/// An object with the properties asked for.
#[derive(Debug, Clone)]
pub struct Obj {
    pub moref: MoRef,
    pub props: Vec<(String, Elem)>,
}

impl Obj {
    /// The value element of property `name`.
    pub fn prop(&self, name: &str) -> Option<&Elem> {
        self.props.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Text of property `name`.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.prop(name).map(|v| v.text.as_str())
    }

    /// Property `name` as a reference.
    pub fn moref_of(&self, name: &str) -> Option<MoRef> {
        self.prop(name).and_then(Elem::moref)
    }

    pub fn name(&self) -> &str {
        self.text("name").unwrap_or("")
    }
}

/// One logged-in session.
pub struct Vim {
    client: Client,
    sc: Elem,
    pub about: About,
    user: String,
    password: Secret,
    timeout: Duration,
    relogged: Cell<bool>,
    /// A Login succeeded and no Logout or ended session followed: there
    /// is a session to log out.
    logged_in: Cell<bool>,
    /// Grows at every login: objects made in the session (filters, views)
    /// belong to one generation.
    generation: Cell<u32>,
}

/// How a wait for a task's updates ended.
enum Waited {
    /// The task ended: its result.
    Done(Option<Elem>),
    /// The session had ended and a new one began: the filter is gone.
    Renewed,
}

impl Vim {
    /// Reads the service content; does not log in.
    pub fn connect(
        client: Client,
        user: &str,
        password: Secret,
        timeout: Duration,
    ) -> Result<Vim, Error> {
        let si = MoRef::new("ServiceInstance", "ServiceInstance");
        let r = client.call("RetrieveServiceContent", &si, "", timeout)?;
        let sc = r
            .child("returnval")
            .cloned()
            .ok_or_else(|| Error::Malformed("RetrieveServiceContent: no returnval".into()))?;
        let about = About {
            api_type: sc.text_at("about/apiType").unwrap_or("").to_string(),
            full_name: sc.text_at("about/fullName").unwrap_or("").to_string(),
            api_version: sc.text_at("about/apiVersion").unwrap_or("").to_string(),
        };
        if !about.api_version.is_empty() {
            client.set_version(&about.api_version);
        }
        Ok(Vim {
            client,
            sc,
            about,
            user: user.to_string(),
            password,
            timeout,
            relogged: Cell::new(false),
            logged_in: Cell::new(false),
            generation: Cell::new(0),
        })
    }

    /// A manager from the service content, e.g. `sessionManager`.
    pub fn manager(&self, name: &str) -> Result<MoRef, Error> {
        self.sc
            .child(name)
            .and_then(Elem::moref)
            .ok_or_else(|| Error::Malformed(format!("the service content has no {name}")))
    }

    /// `SessionManager.Login`. SIGINT/SIGTERM during it fails it as
    /// interrupted, yet its answer is still waited for (up to
    /// `soap::SETTLE`): a session it opened all the same is known, and
    /// [`Vim::logout`] closes it.
    pub fn login(&self) -> Result<(), Error> {
        let sm = self.manager("sessionManager")?;
        let body = format!(
            "<userName>{}</userName><password>{}</password>",
            escape(&self.user),
            escape(self.password.expose())
        );
        let (answer, signal) = self.client.call_settling("Login", &sm, &body, self.timeout);
        let answer = answer.and_then(|_| {
            if self.client.has_session() {
                Ok(())
            } else {
                Err(Error::Malformed(
                    "Login: the answer set no vmware_soap_session cookie".into(),
                ))
            }
        });
        if answer.is_ok() {
            self.logged_in.set(true);
            self.generation.set(self.generation.get().wrapping_add(1));
        }
        match signal {
            Some(s) => Err(Error::Interrupted(s)),
            None => answer,
        }
    }

    /// True while a session is open (to log out).
    pub fn logged_in(&self) -> bool {
        self.logged_in.get()
    }

    /// `SessionManager.Logout`, bounded; the session is forgotten either
    /// way. Ok(false): there was no session (none opened, or it had
    /// ended).
    pub fn logout(&self) -> Result<bool, Error> {
        if !self.logged_in.get() {
            self.client.forget_session();
            return Ok(false);
        }
        self.logged_in.set(false);
        let sm = self.manager("sessionManager")?;
        let r = self.client.call_uninterruptible(
            "Logout",
            &sm,
            "",
            self.timeout.min(Duration::from_secs(10)),
        );
        self.client.forget_session();
        r.map(|_| true)
    }

    /// True once the session was renewed.
    pub fn relogged(&self) -> bool {
        self.relogged.get()
    }

    /// A call in the session; a session that expired (NotAuthenticated) is
    /// renewed once per load and the call repeated.
    pub fn invoke(&self, method: &str, this: &MoRef, body: &str) -> Result<Elem, Error> {
        self.invoke_for(method, this, body, self.timeout)
    }

    fn invoke_for(
        &self,
        method: &str,
        this: &MoRef,
        body: &str,
        timeout: Duration,
    ) -> Result<Elem, Error> {
        let r = match self.client.call(method, this, body, timeout) {
            Err(e) if e.class() == Class::Relogin && !self.relogged.get() => {
                self.renew()?;
                self.client.call(method, this, body, timeout)
            }
            r => r,
        };
        self.ended_again(&r);
        r
    }

    /// Notes a session that ended after its one renewal: nothing of it is
    /// left to log out.
    fn ended_again<T>(&self, r: &Result<T, Error>) {
        if matches!(r, Err(e) if e.class() == Class::Relogin) {
            self.logged_in.set(false);
        }
    }

    /// Logs in again after the session ended; once per load.
    fn renew(&self) -> Result<(), Error> {
        self.relogged.set(true);
        self.logged_in.set(false);
        self.client.forget_session();
        self.login()
    }

    /// Every object of `kind` under `container` (recursively), with `props`.
    pub fn find(&self, container: &MoRef, kind: &str, props: &[&str]) -> Result<Vec<Obj>, Error> {
        let (r, view_lost) = self.find_in_view(container, kind, props)?;
        if view_lost {
            // The session ended while the view was read, and the view
            // with it: read again through a view of the new session.
            return self.find_in_view(container, kind, props)?.0;
        }
        r
    }

    /// `find` through one ContainerView; true when the session that made
    /// the view ended while it was read (the result is then worthless).
    fn find_in_view(
        &self,
        container: &MoRef,
        kind: &str,
        props: &[&str],
    ) -> Result<(Result<Vec<Obj>, Error>, bool), Error> {
        let vm = self.manager("viewManager")?;
        let view = self
            .invoke(
                "CreateContainerView",
                &vm,
                &format!(
                    "{}<type>{}</type><recursive>true</recursive>",
                    container.xml("container"),
                    escape(kind)
                ),
            )?
            .child("returnval")
            .and_then(Elem::moref)
            .ok_or_else(|| Error::Malformed("CreateContainerView: no view".into()))?;
        let spec = format!(
            "<specSet><propSet><type>{}</type>{}</propSet><objectSet>{}<skip>true</skip>\
<selectSet xsi:type=\"TraversalSpec\"><name>view</name><type>ContainerView</type><path>view</path><skip>false</skip></selectSet>\
</objectSet></specSet>",
            escape(kind),
            path_set(props),
            view.xml("obj")
        );
        let generation = self.generation.get();
        let r = self.retrieve(&spec);
        if self.generation.get() != generation {
            return Ok((r, true));
        }
        let _ = self.invoke("DestroyView", &view, "");
        Ok((r, false))
    }

    /// `props` of one object; None when it no longer exists.
    pub fn get(&self, obj: &MoRef, props: &[&str]) -> Result<Option<Obj>, Error> {
        let spec = format!(
            "<specSet><propSet><type>{}</type>{}</propSet><objectSet>{}<skip>false</skip></objectSet></specSet>",
            escape(&obj.ty),
            path_set(props),
            obj.xml("obj")
        );
        match self.retrieve(&spec) {
            Ok(mut v) => Ok(v.pop()),
            Err(e) if e.fault_type() == Some("ManagedObjectNotFound") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// RetrievePropertiesEx and its continuations.
    fn retrieve(&self, spec: &str) -> Result<Vec<Obj>, Error> {
        let pc = self.manager("propertyCollector")?;
        let mut out = Vec::new();
        let mut r = self.invoke("RetrievePropertiesEx", &pc, &format!("{spec}<options/>"))?;
        loop {
            let Some(ret) = r.child("returnval") else {
                return Ok(out);
            };
            for oc in ret.all("objects") {
                let Some(moref) = oc.child("obj").and_then(Elem::moref) else {
                    continue;
                };
                let props = oc
                    .all("propSet")
                    .filter_map(|p| Some((p.text_at("name")?.to_string(), p.child("val")?.clone())))
                    .collect();
                out.push(Obj { moref, props });
            }
            let Some(token) = ret.text_at("token").map(str::to_string) else {
                return Ok(out);
            };
            r = self.invoke(
                "ContinueRetrievePropertiesEx",
                &pc,
                &format!("<token>{}</token>", escape(&token)),
            )?;
        }
    }

    /// Waits for a task through the PropertyCollector; Ok is its
    /// `info.result`. `what` names it in progress lines; the wait ends at
    /// `timeout` with a retry. A filter lives in the session that made it:
    /// when the session ends during the wait, the wait goes on in the new
    /// session through a new filter, whose first update is the task's
    /// whole state (so a task that ended meanwhile is seen at once).
    pub fn wait_task(
        &self,
        task: &MoRef,
        what: &str,
        timeout: Duration,
        report: &Reporter,
    ) -> Result<Option<Elem>, Error> {
        let pc = self.manager("propertyCollector")?;
        let start = Instant::now();
        loop {
            let filter = self
                .invoke(
                    "CreateFilter",
                    &pc,
                    &format!(
                        "<spec><propSet><type>Task</type><pathSet>info.state</pathSet><pathSet>info.progress</pathSet>\
<pathSet>info.error</pathSet><pathSet>info.result</pathSet></propSet><objectSet>{}<skip>false</skip></objectSet></spec>\
<partialUpdates>false</partialUpdates>",
                        task.xml("obj")
                    ),
                )?
                .child("returnval")
                .and_then(Elem::moref)
                .ok_or_else(|| Error::Malformed("CreateFilter: no filter".into()))?;
            let r = match self.wait_filter(&pc, what, start, timeout, report) {
                Ok(Waited::Renewed) => {
                    // The filter went with the old session.
                    report.progress(&format!(
                        "{what}: the session had ended; logged in again, reading the task anew"
                    ));
                    continue;
                }
                Ok(Waited::Done(result)) => Ok(result),
                Err(e) => Err(e),
            };
            if self.logged_in.get() {
                let _ = self.invoke("DestroyPropertyFilter", &filter, "");
            }
            return r;
        }
    }

    /// Waits on the session's one filter until the task ends, `timeout`
    /// after `start` passes, or the session ends and is renewed.
    fn wait_filter(
        &self,
        pc: &MoRef,
        what: &str,
        start: Instant,
        timeout: Duration,
        report: &Reporter,
    ) -> Result<Waited, Error> {
        let mut version = String::new();
        let mut task = TaskView::default();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(Error::Transport {
                    retry: true,
                    message: format!(
                        "{what}: the task did not finish within {} ({})",
                        crate::duration::fmt(timeout),
                        task.status()
                    ),
                });
            }
            let wait = left.min(MAX_WAIT).as_secs().max(1);
            let body = format!(
                "<version>{}</version><options><maxWaitSeconds>{wait}</maxWaitSeconds></options>",
                escape(&version)
            );
            // Not `invoke`: repeated in a new session, this wait would
            // wait on no filter at all.
            let r = match self.client.call(
                "WaitForUpdatesEx",
                pc,
                &body,
                self.timeout + Duration::from_secs(wait),
            ) {
                Err(e) if e.class() == Class::Relogin && !self.relogged.get() => {
                    self.renew()?;
                    return Ok(Waited::Renewed);
                }
                r => {
                    self.ended_again(&r);
                    r?
                }
            };
            if let Some(set) = r.child("returnval") {
                if let Some(v) = set.text_at("version") {
                    version = v.to_string();
                }
                task.apply(set);
            }
            match task.state.as_str() {
                "success" => return Ok(Waited::Done(task.result)),
                "error" => {
                    return Err(match &task.error {
                        Some(e) => soap::task_fault(e),
                        None => Error::Fault {
                            ty: "SystemError".into(),
                            message: format!("{what}: the task failed without an error"),
                            detail: Box::default(),
                        },
                    });
                }
                _ => report.progress(&format!("{what}: {}", task.status())),
            }
        }
    }
}

/// A task's info as the updates so far tell it.
#[derive(Debug, Default)]
struct TaskView {
    /// `queued`, `running`, `success`, `error`; empty before the first update.
    state: String,
    /// Percent done, when the task reports it.
    progress: Option<String>,
    error: Option<Elem>,
    result: Option<Elem>,
}

impl TaskView {
    /// Applies an UpdateSet's property changes.
    fn apply(&mut self, set: &Elem) {
        for fs in set.all("filterSet") {
            for os in fs.all("objectSet") {
                for ch in os.all("changeSet") {
                    let val = ch.child("val");
                    match ch.text_at("name").unwrap_or("") {
                        "info.state" => {
                            self.state = val.map(|v| v.text.clone()).unwrap_or_default()
                        }
                        "info.progress" => self.progress = val.map(|v| v.text.clone()),
                        "info.error" => self.error = val.cloned(),
                        "info.result" => self.result = val.cloned(),
                        _ => {}
                    }
                }
            }
        }
    }

    /// "running 42%", for the spinner and the events.
    fn status(&self) -> String {
        let state = if self.state.is_empty() {
            "waiting"
        } else {
            &self.state
        };
        match self.progress.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => format!("{state} {p}%"),
            None => state.to_string(),
        }
    }
}

fn path_set(props: &[&str]) -> String {
    props
        .iter()
        .map(|p| format!("<pathSet>{}</pathSet>", escape(p)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(changes: &str) -> Elem {
        let text = format!(
            "<?xml version=\"1.0\"?><soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><soapenv:Body><WaitForUpdatesExResponse xmlns=\"urn:vim25\">\
<returnval><version>2</version><filterSet><filter type=\"PropertyFilter\">f-1</filter><objectSet><kind>modify</kind>\
<obj type=\"Task\">task-7</obj>{changes}</objectSet></filterSet></returnval></WaitForUpdatesExResponse></soapenv:Body></soapenv:Envelope>"
        );
        soap::parse_answer("WaitForUpdatesEx", 200, &text)
            .expect("parses")
            .child("returnval")
            .cloned()
            .expect("an update set")
    }

    #[test]
    fn task_updates_give_state_progress_result_and_error() {
        let mut t = TaskView::default();
        assert_eq!(t.status(), "waiting");
        t.apply(&update(
            "<changeSet><name>info.state</name><op>assign</op><val xsi:type=\"TaskInfoState\">running</val></changeSet>\
<changeSet><name>info.progress</name><op>assign</op><val xsi:type=\"xsd:int\">42</val></changeSet>",
        ));
        assert_eq!(t.status(), "running 42%");
        t.apply(&update(
            "<changeSet><name>info.state</name><op>assign</op><val xsi:type=\"TaskInfoState\">success</val></changeSet>\
<changeSet><name>info.result</name><op>assign</op><val type=\"VirtualMachine\" xsi:type=\"ManagedObjectReference\">vm-99</val></changeSet>",
        ));
        assert_eq!(t.state, "success");
        assert_eq!(
            t.result.as_ref().and_then(Elem::moref),
            Some(MoRef::new("VirtualMachine", "vm-99"))
        );

        let mut t = TaskView::default();
        t.apply(&update(
            "<changeSet><name>info.state</name><op>assign</op><val xsi:type=\"TaskInfoState\">error</val></changeSet>\
<changeSet><name>info.error</name><op>assign</op><val xsi:type=\"LocalizedMethodFault\"><fault xsi:type=\"FileNotFound\">\
<file>[ds] base.vmdk</file></fault><localizedMessage>File [ds] base.vmdk was not found</localizedMessage></val></changeSet>",
        ));
        let e = soap::task_fault(t.error.as_ref().expect("an error"));
        assert_eq!(e.fault_type(), Some("FileNotFound"));
        assert_eq!(e.class(), soap::Class::Fatal);
        assert!(e.to_string().contains("(file [ds] base.vmdk)"), "{e}");
    }
}
