//! Rank correlations: how well a proxy orders candidates.

/// Kendall's tau-b between `x` and `y` (pairs of equal length): +1 when every pair of points is
/// ordered alike, -1 when every pair is ordered oppositely; ties are corrected for (tau-b). `None`
/// with fewer than two points, or when either side is constant.
pub fn kendall_tau(x: &[f64], y: &[f64]) -> Option<f64> {
    assert_eq!(x.len(), y.len(), "kendall_tau of unequal lengths");
    let n = x.len();
    let (mut concordant, mut discordant, mut tied_x, mut tied_y) = (0i64, 0i64, 0i64, 0i64);
    for i in 0..n {
        for j in i + 1..n {
            let dx = x[i].total_cmp(&x[j]) as i64;
            let dy = y[i].total_cmp(&y[j]) as i64;
            match (dx, dy) {
                (0, 0) => {}
                (0, _) => tied_x += 1,
                (_, 0) => tied_y += 1,
                _ if dx == dy => concordant += 1,
                _ => discordant += 1,
            }
        }
    }
    // tau-b = (C - D) / sqrt((C + D + T_y) (C + D + T_x)): a pair tied on both sides counts on
    // neither.
    let untied_x = (concordant + discordant + tied_y) as f64;
    let untied_y = (concordant + discordant + tied_x) as f64;
    if untied_x == 0.0 || untied_y == 0.0 {
        return None;
    }
    Some((concordant - discordant) as f64 / (untied_x * untied_y).sqrt())
}

/// Ranks from 1, ties given the mean of the ranks they span.
pub fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        let mean_rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = mean_rank;
        }
        start = end;
    }
    ranks
}

/// Pearson's correlation; `None` with fewer than two points or a constant side.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    assert_eq!(x.len(), y.len(), "pearson of unequal lengths");
    if x.len() < 2 {
        return None;
    }
    let (mx, my) = (mean(x)?, mean(y)?);
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let syy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    if sxx == 0.0 || syy == 0.0 {
        return None;
    }
    Some(sxy / (sxx * syy).sqrt())
}

/// Spearman's rho: Pearson's correlation of the ranks (ties at their mean rank).
pub fn spearman_rho(x: &[f64], y: &[f64]) -> Option<f64> {
    pearson(&ranks(x), &ranks(y))
}

/// The arithmetic mean; `None` of no values.
pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kendall_tau_of_known_orderings() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(kendall_tau(&x, &x), Some(1.0));
        let reversed = [5.0, 4.0, 3.0, 2.0, 1.0];
        assert_eq!(kendall_tau(&x, &reversed), Some(-1.0));
        // One swapped neighbour pair of 10 pairs: (9 - 1) / 10.
        let swapped = [1.0, 2.0, 4.0, 3.0, 5.0];
        assert!((kendall_tau(&x, &swapped).unwrap() - 0.8).abs() < 1e-12);
        assert_eq!(
            kendall_tau(&x, &[1.0; 5]),
            None,
            "a constant side has no tau"
        );
        assert_eq!(kendall_tau(&[1.0], &[2.0]), None, "one point has no tau");
    }

    #[test]
    fn kendall_tau_b_corrects_for_ties() {
        // scipy.stats.kendalltau([1, 2, 2, 3], [1, 2, 3, 4]) = 0.9128709291752769
        let tau = kendall_tau(&[1.0, 2.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!((tau - 0.912_870_929_175_276_9).abs() < 1e-12, "tau-b {tau}");
    }

    #[test]
    fn spearman_rho_of_known_orderings() {
        let x = [0.1, 0.4, 0.2, 0.9];
        assert!((spearman_rho(&x, &[1.0, 3.0, 2.0, 4.0]).unwrap() - 1.0).abs() < 1e-12);
        // scipy.stats.spearmanr([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) = 0.8207826816681233
        let rho = spearman_rho(&[1.0, 2.0, 3.0, 4.0, 5.0], &[5.0, 6.0, 7.0, 8.0, 7.0]).unwrap();
        assert!((rho - 0.820_782_681_668_123_3).abs() < 1e-12, "rho {rho}");
        assert_eq!(ranks(&[3.0, 1.0, 3.0]), vec![2.5, 1.0, 2.5]);
    }

    #[test]
    fn mean_of_values() {
        assert_eq!(mean(&[1.0, 2.0, 3.0]), Some(2.0));
        assert_eq!(mean(&[]), None, "no values have no mean");
    }
}
