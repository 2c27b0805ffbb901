//! Deterministic synthetic subsidy data: people with valid My Numbers and a realistic mix
//! of programs (こども医療費, ひとり親, 難病, 精神通院, 障がい者), valid check digits
//! everywhere, a share of 不開示, and several certificates per person, sometimes from two
//! municipalities (people move).
//!
//! Same seed, same output: person `i` is a pure function of `(seed, i)`, so any number of
//! threads can generate disjoint ranges and benchmark clients can re-derive the people a
//! loader wrote.

use pmh_engine::Date;
use pmh_engine::ids::make;
use pmh_engine::record::{
    AdditionalCondition, BasicFiveInfo, Certificate, Copayment, DesignatedInstitution, FaceItem, MaxCopayment,
};

/// splitmix64: tiny, fast, good enough to spread synthetic values.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `(seed, stream)`.
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        r.next_u64();
        r
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p` percent.
    pub fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// A subsidy program of the synthetic mix.
struct Program {
    name: &'static str,
    type_id: &'static str,
    law: u8,
    /// Share of certificates, in percent.
    share: u64,
}

const PROGRAMS: [Program; 5] = [
    Program { name: "子ども医療費受給者証", type_id: "KODOMO", law: 88, share: 60 },
    Program { name: "ひとり親家庭等医療費受給者証", type_id: "HITORIOYA", law: 89, share: 12 },
    Program { name: "特定医療費（指定難病）受給者証", type_id: "NANBYO", law: 54, share: 10 },
    Program { name: "自立支援医療受給者証（精神通院）", type_id: "SEISHIN", law: 21, share: 10 },
    Program { name: "重度心身障害者医療費受給者証", type_id: "SHOGAI", law: 80, share: 8 },
];

const SURNAMES: [(&str, &str); 8] = [
    ("佐藤", "サトウ"),
    ("鈴木", "スズキ"),
    ("高橋", "タカハシ"),
    ("田中", "タナカ"),
    ("伊藤", "イトウ"),
    ("渡辺", "ワタナベ"),
    ("山本", "ヤマモト"),
    ("中村", "ナカムラ"),
];
const GIVEN: [(&str, &str); 6] =
    [("陽翔", "ハルト"), ("結菜", "ユイナ"), ("蓮", "レン"), ("葵", "アオイ"), ("湊", "ミナト"), ("陽葵", "ヒマリ")];

/// One synthetic person.
#[derive(Debug, Clone)]
pub struct Person {
    /// Their (synthetic, valid) My Number.
    pub my_number: String,
    /// Their certificates.
    pub certificates: Vec<Certificate>,
}

/// The synthetic population.
#[derive(Debug, Clone, Copy)]
pub struct Population {
    /// Seed.
    pub seed: u64,
    /// The date around which certificates are valid (most contain it).
    pub today: Date,
}

impl Population {
    /// A population valid around `today`.
    pub fn new(seed: u64, today: Date) -> Population {
        Population { seed, today }
    }

    /// The My Number of person `i` (distinct for distinct `i` below 10¹¹).
    pub fn my_number(&self, i: u64) -> String {
        // An odd multiplier modulo 10^11 is a bijection on 0..10^11 only when coprime to
        // 10; 7_919 is, so distinct people get distinct numbers.
        make::my_number((i.wrapping_mul(7_919).wrapping_add(self.seed % 1_000)) % 100_000_000_000)
    }

    /// Person `i`.
    pub fn person(&self, i: u64) -> Person {
        let mut r = Rng::new(self.seed, i);
        let pref = 1 + r.below(47) as u32;
        let muni = pref * 1000 + 100 + r.below(50) as u32 * 2;
        let moved = r.percent(5);
        let not_disclosed = r.percent(2);
        let (sn, sk) = SURNAMES[r.below(SURNAMES.len() as u64) as usize];
        let (gn, gk) = GIVEN[r.below(GIVEN.len() as u64) as usize];
        let basic = BasicFiveInfo {
            name: format!("{sn} {gn}"),
            name_kana: format!("{sk} {gk}"),
            address: format!("{}県{}市{}-{}-{}", pref, muni % 1000, 1 + r.below(9), 1 + r.below(30), 1 + r.below(20)),
            date_of_birth: Some(self.today.days() - 365 * (1 + r.below(80) as i32) - r.below(365) as i32),
            sex: (r.below(3)) as u8,
        };
        let n = 1 + usize::from(r.percent(25)) + usize::from(r.percent(5));
        let mut certificates = Vec::with_capacity(n + usize::from(moved));
        for k in 0..n {
            certificates.push(self.certificate(&mut r, i, k, muni, &basic, not_disclosed, false));
        }
        if moved {
            // A certificate from the previous municipality, expired.
            let prev = muni + 2;
            certificates.push(self.certificate(&mut r, i, n, prev, &basic, not_disclosed, true));
        }
        Person { my_number: self.my_number(i), certificates }
    }

    #[allow(clippy::too_many_arguments)]
    fn certificate(
        &self,
        r: &mut Rng,
        i: u64,
        k: usize,
        muni_body: u32,
        basic: &BasicFiveInfo,
        not_disclosed: bool,
        expired: bool,
    ) -> Certificate {
        let mut pick = r.below(100);
        let prog = PROGRAMS
            .iter()
            .find(|p| {
                if pick < p.share {
                    true
                } else {
                    pick -= p.share;
                    false
                }
            })
            .unwrap_or(&PROGRAMS[0]);
        let pref = (muni_body / 1000) as u8;
        let municipality = make::municipality_code(muni_body);
        let insurer = make::insurer_number(prog.law, pref, (muni_body % 1000) as u16);
        let recipient = if prog.law < 80 {
            make::national_recipient_number((i % 1_000_000) as u32)
        } else {
            format!("{:08}", i % 100_000_000)
        };
        let (from, to) = if expired {
            (self.today.days() - 730, self.today.days() - 366)
        } else {
            (self.today.days() - r.below(300) as i32, self.today.days() + 30 + r.below(400) as i32)
        };
        let inst = make::institution_code(pref, 1, (i % 1_000_000) as u32);
        Certificate {
            municipality_code: municipality.parse().unwrap_or(0),
            org_specific_certificate_type_id: prog.type_id.to_string(),
            history_key: format!("{i:011}-{k}"),
            basic_five_info: basic.clone(),
            is_not_disclosed: not_disclosed,
            medical_subsidy_insurer_number: insurer.parse().unwrap_or(0),
            certification_name: prog.name.to_string(),
            medical_subsidy_recipient_number: recipient,
            certification_sub_key: None,
            segment: (prog.law == 21).then(|| "重度かつ継続".to_string()),
            income_segment: Some(["一般", "低所得I", "低所得II", "上位"][r.below(4) as usize].to_string()),
            additional_conditions: if r.percent(10) {
                vec![AdditionalCondition { item: "入院".into(), code: "1".into() }]
            } else {
                vec![]
            },
            designated_medical_institutions: if prog.law < 80 {
                vec![DesignatedInstitution { code: inst.parse().unwrap_or(0), name: Some("さくら医院".into()) }]
            } else {
                vec![]
            },
            is_always_reimbursement: false,
            copayment: vec![Copayment {
                category: "外来".into(),
                burden_definition: if prog.law < 80 { "定率".into() } else { "定額".into() },
                rate_per_visit: (prog.law < 80).then_some(20),
                amount_per_visit: (prog.law >= 80).then_some(200),
                ..Default::default()
            }],
            max_copayment_amount: MaxCopayment {
                monthly: Some([0, 2_500, 5_000, 10_000][r.below(4) as usize]),
                ..Default::default()
            },
            valid_from: from,
            valid_to: to,
            certification_detail: vec![FaceItem { name: "受給者証名".into(), value: prog.name.into() }],
        }
    }

    /// An institution code that the synthetic data uses for person `i`'s designated
    /// institution (useful to see `isDesignatedInstitution: true`).
    pub fn institution_for(&self, i: u64) -> String {
        let mut r = Rng::new(self.seed, i);
        let pref = 1 + r.below(47) as u8;
        make::institution_code(pref, 1, (i % 1_000_000) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pmh_engine::ids::{InsurerNumber, MunicipalityCode, MyNumber, validate_recipient_number};

    #[test]
    fn deterministic_and_valid() {
        let p = Population::new(42, Date::parse("2026-11-21").unwrap());
        let mut numbers = std::collections::HashSet::new();
        for i in 0..2000 {
            let a = p.person(i);
            let b = p.person(i);
            assert_eq!(a.certificates, b.certificates);
            assert!(MyNumber::parse(&a.my_number).is_ok());
            assert!(numbers.insert(a.my_number.clone()), "duplicate My Number for {i}");
            for c in &a.certificates {
                assert_eq!(c.check(), Ok(()));
                let ins = InsurerNumber::parse(&format!("{:08}", c.medical_subsidy_insurer_number)).unwrap();
                MunicipalityCode::parse(&format!("{:06}", c.municipality_code)).unwrap();
                validate_recipient_number(ins, &c.medical_subsidy_recipient_number).unwrap();
            }
        }
    }
}
