//! Sanctions screening cost: one applicant's name against lists of growing size.
//!
//! `cargo bench --bench kyc_screening`. Screening runs once per KYC submission, so what
//! matters is that a realistic list (tens of thousands of entries) stays well under the
//! time of the request's other work.

use std::time::Instant;

use tradegraph::domain::screening::{parse_list, screen};

fn synthetic_list(entries: usize) -> String {
    const FIRST: [&str; 12] = [
        "Zoltan",
        "Imogen",
        "Aleksandr",
        "Mohammed",
        "Jose",
        "Soren",
        "Yusuf",
        "Greta",
        "Nikolai",
        "Amara",
        "Chen",
        "Dmitri",
    ];
    const LAST: [&str; 12] = [
        "Vexmoor",
        "Drakewell",
        "Grimwaldov",
        "al-Fictitia",
        "Ortiz",
        "Blaeksmark",
        "Quarrendale",
        "Halvorsen",
        "Petrenkov",
        "Okonkwo",
        "Liang",
        "Vasquez",
    ];
    let mut csv = String::from("name,list\n");
    for i in 0..entries {
        let first = FIRST[i % FIRST.len()];
        let last = LAST[(i / FIRST.len()) % LAST.len()];
        csv.push_str(&format!("{first} {last}{i},SANCTIONS\n"));
    }
    csv
}

fn main() {
    for entries in [100, 1_000, 10_000, 50_000] {
        let list = match parse_list(&synthetic_list(entries)) {
            Ok(list) => list,
            Err(error) => {
                eprintln!("bad list: {error}");
                return;
            }
        };
        let names = ["Zoltán Vexmoor", "Jane Public", "Aleksander Grimwaldow 77"];
        let rounds = (200_000 / entries).max(3);
        let started = Instant::now();
        let mut hits = 0;
        for _ in 0..rounds {
            for name in names {
                hits += screen(name, &list, 0.93).len();
            }
        }
        let per_name = started.elapsed() / (rounds * names.len()) as u32;
        println!(
            "{entries:>6} entries: {:>9.3} ms per name screened ({hits} hits over {rounds} rounds)",
            per_name.as_secs_f64() * 1000.0
        );
    }
}
