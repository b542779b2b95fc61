import torch
import torch.nn.functional as F

from admn_core.config import HeadSpec
from admn_core.models.heads import ClassificationHead, GaussianLocalizationHead


def test_covariance_is_cholesky_form_plus_the_variance_floor():
    torch.manual_seed(0)
    head = GaussianLocalizationHead(16, HeadSpec(min_variance=1.0))
    pooled = torch.randn(6, 16)
    prediction = head(pooled)
    logits = head.cov_out(head.mlp(pooled))
    tril = torch.zeros(6, 2, 2)
    tril[:, 0, 0], tril[:, 1, 1], tril[:, 1, 0] = F.softplus(logits[:, 0]), F.softplus(logits[:, 1]), logits[:, 2]
    expected = tril @ tril.transpose(1, 2) + torch.eye(2)
    assert torch.allclose(prediction.covariance, expected, atol=1e-6)
    assert (torch.linalg.eigvalsh(prediction.covariance) >= 1.0 - 1e-5).all()


def test_covariance_scale_multiplies_the_cholesky_factor():
    torch.manual_seed(0)
    unit = GaussianLocalizationHead(16, HeadSpec())
    scaled = GaussianLocalizationHead(16, HeadSpec(covariance_scale=50.0))
    scaled.load_state_dict(unit.state_dict())
    pooled = torch.randn(4, 16)
    floor = torch.eye(2)
    # L → 50·L, so L Lᵀ → 2500·L Lᵀ; the variance floor is added after the scaling.
    torch.testing.assert_close(scaled(pooled).covariance - floor, 2500 * (unit(pooled).covariance - floor),
                               rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(scaled(pooled).mean, unit(pooled).mean)


def test_mean_is_bounded_by_the_half_range_around_the_centre():
    head = GaussianLocalizationHead(8, HeadSpec(mean_center=(10.0, -5.0), mean_half_range=(200.0, 100.0)))
    with torch.no_grad():
        head.mean_out.bias.fill_(1e4)
    mean = head(torch.zeros(1, 8)).mean[0]
    assert torch.allclose(mean, torch.tensor([210.0, 95.0]))


def test_localization_loss_is_nll_plus_weighted_distance():
    head = GaussianLocalizationHead(8, HeadSpec(distance_weight=0.05))
    prediction = head(torch.randn(3, 8))
    target = prediction.mean.detach() + torch.tensor([[3.0, 4.0]] * 3)  # 5 cm away
    nll = -torch.distributions.MultivariateNormal(prediction.mean, prediction.covariance).log_prob(target)
    assert torch.allclose(head.loss(prediction, target), (nll + 0.05 * 5.0).mean(), atol=1e-5)


def test_classification_loss_is_cross_entropy():
    head = ClassificationHead(8, HeadSpec(task="classification", num_classes=4))
    logits = head(torch.randn(5, 8))
    labels = torch.tensor([0, 1, 2, 3, 0])
    assert torch.allclose(head.loss(logits, labels), F.cross_entropy(logits, labels))
