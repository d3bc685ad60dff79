//! Two-objective Pareto ranking: a point is a cost to minimise (latency, or MAdds) and a value
//! to maximise (accuracy). Non-dominated sorting and crowding distance as in NSGA-II (Deb et al.
//! 2002), for the Pareto selection of the evolution and the fronts the plots and the report draw.

use crate::fitness::{FitnessConfig, LatencyPass};

/// `(cost, value)`: lower cost and higher value are better.
pub type Point = (f64, f64);

/// The cost a stage's networks are drawn against: their predicted latency when the stage's
/// fitness has a latency objective, else their MAdds.
#[derive(Clone, Debug, PartialEq)]
pub enum CostAxis {
    Madds,
    Latency { device: String, pass: LatencyPass },
}

impl CostAxis {
    pub fn of(fitness: &FitnessConfig) -> CostAxis {
        match &fitness.latency {
            Some(l) => CostAxis::Latency {
                device: l.device.clone(),
                pass: l.pass,
            },
            None => CostAxis::Madds,
        }
    }

    /// The axis title.
    pub fn label(&self) -> String {
        match self {
            CostAxis::Madds => "MAdds (millions)".into(),
            CostAxis::Latency { device, pass } => format!(
                "predicted latency on {device}, {} (ms)",
                match pass {
                    LatencyPass::Inference => "one inference pass",
                    LatencyPass::Training => "one training step",
                }
            ),
        }
    }

    /// What the chart's legend calls the cost.
    pub fn name(&self) -> &'static str {
        match self {
            CostAxis::Madds => "MAdds",
            CostAxis::Latency { .. } => "latency",
        }
    }

    /// A network's cost in the axis's unit (millions of MAdds, or milliseconds); `None` for a
    /// latency axis and a network without a predicted latency (a failed evaluation).
    pub fn cost(&self, madds: u64, latency_ms: Option<f64>) -> Option<f64> {
        match self {
            CostAxis::Madds => Some(madds as f64 / 1e6),
            CostAxis::Latency { .. } => latency_ms,
        }
    }
}

/// Whether `a` dominates `b`: no worse in both objectives and better in one.
pub fn dominates(a: Point, b: Point) -> bool {
    a.0 <= b.0 && a.1 >= b.1 && (a.0 < b.0 || a.1 > b.1)
}

/// The non-dominated rank of each point: 0 for the points no other dominates, 1 for those
/// only rank-0 points dominate, and so on. O(n²) per front: populations are tens.
pub fn ranks(points: &[Point]) -> Vec<usize> {
    let n = points.len();
    let mut rank = vec![usize::MAX; n];
    let mut left: Vec<usize> = (0..n).collect();
    let mut current = 0;
    while !left.is_empty() {
        let front: Vec<usize> = left
            .iter()
            .copied()
            .filter(|&i| !left.iter().any(|&j| dominates(points[j], points[i])))
            .collect();
        for &i in &front {
            rank[i] = current;
        }
        left.retain(|i| rank[*i] == usize::MAX);
        current += 1;
    }
    rank
}

/// The crowding distance of each point within its rank: the sum over both objectives of the
/// normalised gap between its neighbours; the ends of a front get infinity, so selection keeps
/// a front's extremes and spreads along it.
pub fn crowding(points: &[Point], rank: &[usize]) -> Vec<f64> {
    let mut distance = vec![0.0; points.len()];
    let fronts = rank.iter().copied().max().map_or(0, |r| r + 1);
    for r in 0..fronts {
        let members: Vec<usize> = (0..points.len()).filter(|&i| rank[i] == r).collect();
        for objective in [|p: Point| p.0, |p: Point| p.1] {
            let mut sorted = members.clone();
            sorted.sort_by(|&a, &b| objective(points[a]).total_cmp(&objective(points[b])));
            let (Some(&first), Some(&last)) = (sorted.first(), sorted.last()) else {
                continue;
            };
            let span = objective(points[last]) - objective(points[first]);
            distance[first] = f64::INFINITY;
            distance[last] = f64::INFINITY;
            // A span of zero (one point, or all equal) or not a number (a front of failed
            // members alone, whose costs are all infinite) normalises nothing: only the ends
            // count.
            if !(span > 0.0 && span.is_finite()) {
                continue;
            }
            for w in sorted.windows(3) {
                distance[w[1]] += (objective(points[w[2]]) - objective(points[w[0]])) / span;
            }
        }
    }
    distance
}

/// The tournament winner among the `drawn` indices of `points` (the whole population, whose
/// ranks and crowding it is judged by): the lowest Pareto rank, then the larger crowding
/// distance, then `tie`'s order.
pub fn select(
    points: &[Point],
    drawn: &[usize],
    tie: impl Fn(usize, usize) -> std::cmp::Ordering,
) -> usize {
    let rank = ranks(points);
    let crowding = crowding(points, &rank);
    *drawn
        .iter()
        .min_by(|&&a, &&b| {
            rank[a]
                .cmp(&rank[b])
                .then(crowding[b].total_cmp(&crowding[a]))
                .then(tie(a, b))
        })
        .expect("a tournament of at least one")
}

/// The indices of the non-dominated points, by increasing cost; of equal points, the first.
pub fn front(points: &[Point]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| {
        points[a]
            .0
            .total_cmp(&points[b].0)
            .then(points[b].1.total_cmp(&points[a].1))
            .then(a.cmp(&b))
    });
    let mut kept: Vec<usize> = Vec::new();
    for i in order {
        if kept.last().is_none_or(|&last| points[i].1 > points[last].1) {
            kept.push(i);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_peel_fronts_off_in_order() {
        // Front 0: (1, 0.5), (2, 0.7), (4, 0.9); front 1: (2, 0.5), (5, 0.9); front 2: (6, 0.4).
        let points = [
            (2.0, 0.5),
            (1.0, 0.5),
            (6.0, 0.4),
            (2.0, 0.7),
            (4.0, 0.9),
            (5.0, 0.9),
        ];
        assert_eq!(ranks(&points), [1, 0, 2, 0, 0, 1]);
        assert_eq!(front(&points), [1, 3, 4]);
    }

    #[test]
    fn crowding_favours_a_front_s_ends_and_its_sparse_parts() {
        let points = [(1.0, 0.1), (2.0, 0.5), (2.2, 0.52), (5.0, 0.9)];
        let rank = ranks(&points);
        assert_eq!(rank, [0, 0, 0, 0]);
        let d = crowding(&points, &rank);
        assert!(d[0].is_infinite() && d[3].is_infinite(), "{d:?}");
        // Point 1 sits between 0 and 2, point 2 between 1 and 3: 2 has the wider gap.
        assert!(d[2] > d[1], "{d:?}");
    }

    #[test]
    fn a_tournament_prefers_the_front_to_a_more_accurate_dominated_member() {
        // Front: A, B, C, E; F is dominated by E alone, and more accurate than A, B and C.
        let points = [
            (1.0, 0.5),   // A
            (2.0, 0.7),   // B
            (4.0, 0.9),   // C
            (3.0, 0.6),   // D, dominated by B
            (5.0, 0.95),  // E
            (10.0, 0.92), // F
        ];
        let by_index = |a: usize, b: usize| a.cmp(&b);
        assert_eq!(select(&points, &[5, 0], by_index), 0, "F against A");
        assert_eq!(select(&points, &[3, 1], by_index), 1, "D against B");
        // B and C are inside the front; A is its end (infinite crowding).
        assert_eq!(select(&points, &[1, 2, 0], by_index), 0, "B, C, A");
        // Two ends: the tie-break decides.
        let higher_value_first = |a: usize, b: usize| points[b].1.total_cmp(&points[a].1);
        assert_eq!(
            select(&points, &[0, 4], higher_value_first),
            4,
            "A against E"
        );
    }

    #[test]
    fn equal_points_do_not_dominate_each_other() {
        let points = [(1.0, 0.5), (1.0, 0.5)];
        assert_eq!(ranks(&points), [0, 0]);
        assert_eq!(front(&points), [0]);
    }
}
