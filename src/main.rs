//! reimage: gets one computer ready for one reservation.

#![allow(dead_code)]

mod attempt;
mod control;
mod duration;
mod exec;
mod outcome;
mod signal;

fn main() {
    signal::install();
}
