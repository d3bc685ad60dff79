//! How a fresh network's weights are drawn. The schemes and the measurements that chose the
//! default are in `docs/initialisation.md`.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand_distr::{Distribution, Normal, Uniform};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A weight-initialisation scheme for the convolutions and the classifier (batch norm always
/// starts at weight 1, bias 0, running mean 0, running variance 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitScheme {
    /// PyTorch's own layer defaults (`nn.Conv2d`, `nn.Linear`): every weight uniform in
    /// ±1/sqrt(fan_in), the classifier's bias too. Depthwise 3x3: ±0.33.
    #[default]
    Pytorch,
    /// torchvision's MobileNet-V2: Kaiming normal with fan_out for every convolution (a depthwise
    /// 3x3 over C channels: std sqrt(2 / 9C), 0.039 at C = 144), classifier N(0, 0.01), bias 0.
    Torchvision,
    /// torchvision's, but each depthwise convolution with fan_in (std sqrt(2 / k^2)).
    DepthwiseFanIn,
    /// Kaiming normal with fan_in for every convolution (std sqrt(2 / fan_in)), the classifier as
    /// PyTorch's default.
    FanIn,
}

impl InitScheme {
    pub const ALL: [InitScheme; 4] = [
        InitScheme::Pytorch,
        InitScheme::Torchvision,
        InitScheme::DepthwiseFanIn,
        InitScheme::FanIn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            InitScheme::Pytorch => "pytorch",
            InitScheme::Torchvision => "torchvision",
            InitScheme::DepthwiseFanIn => "depthwise-fan-in",
            InitScheme::FanIn => "fan-in",
        }
    }
}

impl fmt::Display for InitScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for InitScheme {
    type Err = Error;

    fn from_str(text: &str) -> Result<InitScheme> {
        InitScheme::ALL
            .into_iter()
            .find(|s| s.name() == text)
            .ok_or_else(|| {
                let names: Vec<_> = InitScheme::ALL.iter().map(|s| s.name()).collect();
                Error::Network(format!(
                    "unknown initialisation `{text}`; expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// The initialisation of a whole network: a scheme, and whether the last batch norm of each
/// residual MBConv layer starts at weight 0 (so the layer starts as the identity). SepConv layers
/// keep theirs at 1: a ReLU follows their last batch norm, and a zero weight there would never
/// receive a gradient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Init {
    pub scheme: InitScheme,
    pub zero_residual_bn: bool,
}

impl Init {
    /// Weights of a convolution of shape (cout, cin / groups, k, k), in that order.
    pub fn conv_weight(&self, shape: [usize; 4], groups: usize, rng: &mut impl Rng) -> Vec<f32> {
        let [cout, cin_per_group, kh, kw] = shape;
        let receptive = (kh * kw) as f64;
        let fan_in = cin_per_group as f64 * receptive;
        let fan_out = cout as f64 * receptive;
        let depthwise = groups > 1 && cin_per_group == 1;
        let count = cout * cin_per_group * kh * kw;
        let kaiming = |fan: f64| Sampler::Normal((2.0 / fan).sqrt());
        let sampler = match self.scheme {
            InitScheme::Pytorch => Sampler::Uniform(1.0 / fan_in.sqrt()),
            InitScheme::Torchvision => kaiming(fan_out),
            InitScheme::DepthwiseFanIn if depthwise => kaiming(fan_in),
            InitScheme::DepthwiseFanIn => kaiming(fan_out),
            InitScheme::FanIn => kaiming(fan_in),
        };
        sampler.draw(count, rng)
    }

    /// The classifier's weight (classes, features) and bias (classes).
    pub fn classifier(
        &self,
        classes: usize,
        features: usize,
        rng: &mut impl Rng,
    ) -> (Vec<f32>, Vec<f32>) {
        let bound = 1.0 / (features as f64).sqrt();
        match self.scheme {
            InitScheme::Torchvision | InitScheme::DepthwiseFanIn => (
                Sampler::Normal(0.01).draw(classes * features, rng),
                vec![0.0; classes],
            ),
            InitScheme::Pytorch | InitScheme::FanIn => (
                Sampler::Uniform(bound).draw(classes * features, rng),
                Sampler::Uniform(bound).draw(classes, rng),
            ),
        }
    }
}

/// A zero-mean distribution: normal with a standard deviation, or uniform in ±bound.
enum Sampler {
    Normal(f64),
    Uniform(f64),
}

impl Sampler {
    fn draw(&self, count: usize, rng: &mut impl Rng) -> Vec<f32> {
        match *self {
            Sampler::Normal(std) => {
                let normal = Normal::new(0.0, std).expect("a finite positive std");
                (0..count).map(|_| normal.sample(rng) as f32).collect()
            }
            Sampler::Uniform(bound) => {
                let uniform = Uniform::new_inclusive(-bound, bound);
                (0..count).map(|_| uniform.sample(rng) as f32).collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn std_of(values: &[f32]) -> f64 {
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
        (values
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt()
    }

    /// Each scheme's spread for a depthwise 3x3 over 144 channels and a 1x1 from 24 to 144, within
    /// 5% of its definition (sampling error at these counts is under 2%).
    #[test]
    fn every_scheme_draws_its_documented_spread() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let uniform_std = |bound: f64| bound / 3f64.sqrt();
        let cases = [
            (
                InitScheme::Pytorch,
                uniform_std(1.0 / 3.0),
                uniform_std(1.0 / 24f64.sqrt()),
            ),
            (
                InitScheme::Torchvision,
                (2.0 / 1296.0f64).sqrt(),
                (2.0 / 144.0f64).sqrt(),
            ),
            (
                InitScheme::DepthwiseFanIn,
                (2.0 / 9.0f64).sqrt(),
                (2.0 / 144.0f64).sqrt(),
            ),
            (
                InitScheme::FanIn,
                (2.0 / 9.0f64).sqrt(),
                (2.0 / 24.0f64).sqrt(),
            ),
        ];
        for (scheme, depthwise_std, pointwise_std) in cases {
            let init = Init {
                scheme,
                zero_residual_bn: false,
            };
            let dw = init.conv_weight([144, 1, 3, 3], 144, &mut rng);
            let pw = init.conv_weight([144, 24, 1, 1], 1, &mut rng);
            for (what, got, want) in [
                ("depthwise", std_of(&dw), depthwise_std),
                ("pointwise", std_of(&pw), pointwise_std),
            ] {
                assert!(
                    (got / want - 1.0).abs() < 0.05,
                    "{scheme} {what}: std {got:.4}, expected {want:.4}"
                );
            }
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_errors() {
        for scheme in InitScheme::ALL {
            assert_eq!(scheme.name().parse::<InitScheme>().unwrap(), scheme);
        }
        let e = "kaiming".parse::<InitScheme>().unwrap_err().to_string();
        assert!(e.contains("kaiming") && e.contains("torchvision"), "{e}");
    }
}
