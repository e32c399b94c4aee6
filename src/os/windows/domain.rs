//! Active Directory at first boot, after Apache VCL's Windows.pm (ad_join,
//! ad_unjoin, ad_get_current_domain), in the order Kerberos needs: the
//! clock is synced before this runs (the caller's order), then the DNS
//! servers for the domain (`domain_dns`), then the join. A computer that
//! is a member of another domain (or whose join answers 2691, already
//! joined) leaves it and joins once more; an image that is a member of a
//! domain when the profile names none leaves it.

use super::commands::{self, DIR, Windows, argv};
use crate::config::DomainConfig;
use crate::os::actions::Actions;
use crate::os::sequence::Sequence;
use crate::outcome::Outcome;

/// NERR_SetupAlreadyJoined: "This computer is already joined to a domain"
/// (Win32_ComputerSystem.JoinDomainOrWorkgroup's return codes).
const ALREADY_JOINED: i32 = 2691;

/// The domain the computer is a member of now (None: a workgroup).
fn membership(w: Windows, a: &mut Actions, step: &str) -> Result<Option<String>, Outcome> {
    let out = a.run(step, &commands::domain_query(w), Outcome::Retry)?;
    Ok(commands::joined_domain(&out.stdout))
}

/// Leaves domain `j` (no credentials: the computer account stays, as VCL's
/// ad_unjoin); takes effect at the next boot.
fn unjoin(w: Windows, a: &mut Actions, j: &str) -> Result<(), Outcome> {
    let name = "unjoin-domain";
    let out = a.ask(name, &commands::unjoin_command(w))?;
    match commands::wmi_result(&out) {
        Ok(_) if out.status == 0 => {
            a.report
                .step_done(&format!("left {j}: takes effect at the next boot"));
            Ok(())
        }
        Ok(_) | Err(_) => {
            let why = commands::wmi_result(&out).err().unwrap_or_else(|| {
                crate::exec::excerpt(format!("{}{}", out.stdout, out.stderr).trim(), 3)
            });
            let m = format!("{}: could not leave {j}: {why}", a.plan.computer.name);
            a.report.step_failed(&m);
            Err(Outcome::Retry(anyhow::anyhow!(m)))
        }
    }
}

/// The profile names no domain: an image that is a member of one leaves
/// it and reboots, so no stale membership (and no domain policy) stays.
pub fn leave_unnamed(w: Windows, seq: &mut Sequence) -> Result<(), Outcome> {
    if seq.plan.profile.domain.is_some() {
        return Ok(());
    }
    let mut a = Actions::new(seq.plan, seq.attempt, seq.channel, seq.report);
    let Some(j) = membership(w, &mut a, "check-domain")? else {
        return Ok(());
    };
    seq.report.info(&format!(
        "the image is a member of {j} and the profile names no domain: leaving it"
    ));
    unjoin(w, &mut a, &j)?;
    reboot(seq, "unjoin-reboot")
}

/// Reboots as step `name` and waits for the new boot.
fn reboot(seq: &mut Sequence, name: &str) -> Result<(), Outcome> {
    let t = seq.attempt.scale(commands::REBOOT_TIMEOUT);
    seq.reboot(name, commands::reboot_command(), t)
}

/// The domain, when the profile names one: DNS servers set, joined
/// (unless it is a member already; leaving another domain first),
/// rebooted, checked.
pub fn join(w: Windows, seq: &mut Sequence) -> Result<(), Outcome> {
    let Some(d) = seq.plan.profile.domain.clone() else {
        return Ok(());
    };
    let who = seq.plan.computer.name.clone();
    let mut a = Actions::new(seq.plan, seq.attempt, seq.channel, seq.report);
    set_dns(&mut a)?;
    let now = membership(w, &mut a, "check-domain")?;
    if now
        .as_deref()
        .is_some_and(|j| j.eq_ignore_ascii_case(&d.name))
    {
        a.report.info(&format!("already a member of {}", d.name));
        return Ok(());
    }
    if let Some(j) = &now {
        a.report.warn(&format!(
            "{who}: the image is a member of {j}, not {}: leaving it first",
            d.name
        ));
        unjoin(w, &mut a, j)?;
    }
    let (user, pw) = credentials(&who, &d)?;
    match join_domain(&mut a, &d, &user, &pw)? {
        Some(ALREADY_JOINED) => {
            a.report.warn(&format!(
                "{who}: the join answered {ALREADY_JOINED} (already joined to a domain): leaving it and joining once more"
            ));
            let j = membership(w, &mut a, "check-domain")?.unwrap_or_else(|| "its domain".into());
            unjoin(w, &mut a, &j)?;
            if let Some(code) = join_domain(&mut a, &d, &user, &pw)? {
                return Err(join_failed(&a, &d, code));
            }
        }
        Some(code) => return Err(join_failed(&a, &d, code)),
        None => {}
    }
    reboot(seq, "domain-reboot")?;
    let mut a = Actions::new(seq.plan, seq.attempt, seq.channel, seq.report);
    match membership(w, &mut a, "check-domain")? {
        Some(j) if j.eq_ignore_ascii_case(&d.name) => Ok(()),
        other => Err(Outcome::Retry(anyhow::anyhow!(
            "{who}: joined {} but after the reboot the computer is in {}",
            d.name,
            other.unwrap_or_else(|| "a workgroup".into())
        ))),
    }
}

/// The outcome of a join that answered `code`: a domain controller that
/// does not answer, or a clock Kerberos refuses, may be fixed by a later
/// attempt; the message names the code.
fn join_failed(a: &Actions, d: &DomainConfig, code: i32) -> Outcome {
    Outcome::Retry(anyhow::anyhow!(
        "{}: joining {} failed: JoinDomainOrWorkgroup returned {code}{}",
        a.plan.computer.name,
        d.name,
        match code {
            1326 => " (logon failure: check the credentials_file)",
            1355 => " (no such domain: check domain_dns and the name)",
            1398 => " (time skew: the clock differs from the domain controller's)",
            _ => "",
        }
    ))
}

/// The DNS servers of `domain_dns`, in order, on every adapter; nothing
/// when there are none.
fn set_dns(a: &mut Actions) -> Result<(), Outcome> {
    let servers = a.plan.profile.domain_dns.clone();
    if servers.is_empty() {
        return Ok(());
    }
    let script = format!(r"{DIR}\dns.vbs");
    a.upload(
        "upload-dns-script",
        commands::dns_script().as_bytes(),
        &script,
        0o600,
    )?;
    let mut cmd = argv(&["cscript", "//nologo", &script]);
    cmd.extend(servers);
    a.run("domain-dns", &cmd, Outcome::Retry)?;
    Ok(())
}

/// The domain credentials file: the user on its first line, the password
/// on its second.
fn credentials(who: &str, d: &DomainConfig) -> Result<(String, String), Outcome> {
    let creds = std::fs::read_to_string(&d.credentials_file).map_err(|e| {
        Outcome::Fatal(anyhow::anyhow!(
            "{who}: cannot read domain credentials_file {}: {e}",
            d.credentials_file.display()
        ))
    })?;
    let mut lines = creds.lines().map(|l| l.trim_end_matches('\r'));
    let (user, pw) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    if user.is_empty() || pw.is_empty() {
        return Err(Outcome::Fatal(anyhow::anyhow!(
            "domain credentials_file {} needs the user on its first line and the password on its second",
            d.credentials_file.display()
        )));
    }
    Ok((user.to_string(), pw.to_string()))
}

/// Joins domain `d` through the domain VBScript, the credentials in a file
/// it deletes first thing: None when it joined, else the method's code.
fn join_domain(
    a: &mut Actions,
    d: &DomainConfig,
    user: &str,
    pw: &str,
) -> Result<Option<i32>, Outcome> {
    let script = format!(r"{DIR}\domain.vbs");
    let file = format!(r"{DIR}\domain-credentials.txt");
    a.upload(
        "upload-domain-script",
        commands::domain_script().as_bytes(),
        &script,
        0o600,
    )?;
    a.upload(
        "upload-domain-credentials",
        format!("{user}\r\n{pw}\r\n").as_bytes(),
        &file,
        0o600,
    )?;
    let mut cmd = argv(&["cscript", "//nologo", &script, &file, &d.name]);
    if let Some(ou) = &d.ou {
        cmd.push(format!("\"{ou}\""));
    }
    // The script exits with the method's code; a channel error is the
    // channel's outcome. It deletes the file first thing; should it not
    // have run, the file is deleted here.
    let out = a.ask("join-domain", &cmd);
    let del = |a: &mut Actions| {
        let _ = a.ch.run(&commands::del_command(&file), a.timeout);
    };
    let out = match out {
        Ok(o) => o,
        Err(o) => {
            del(a);
            return Err(o);
        }
    };
    if out.status == 0 {
        a.report
            .step_done(&crate::exec::excerpt(out.stdout.trim(), 1));
        return Ok(None);
    }
    del(a);
    let text = format!("{}{}", out.stdout.trim(), out.stderr.trim());
    a.report.step_failed(&format!(
        "exited {}: {}",
        out.status,
        crate::exec::excerpt(&text, 3)
    ));
    Ok(Some(out.status))
}
