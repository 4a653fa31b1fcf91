"""The published weights as one table (provenance.py): docs/weights.md shows it as it is, its names
are ones the rest of the package knows, and a job trained from scratch defaults to what the family's
ImageNet weights were trained with."""

import os
import re

from efficientnet_jax import input_pipeline, normalizations, provenance, scaling

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS_DOC = os.path.join(REPO, "docs", "weights.md")


def test_the_docs_weights_table_is_the_provenance_table():
    with open(WEIGHTS_DOC) as f:
        doc = f.read()
    shown = re.search(r"<!-- provenance table: begin -->\n(.*?)<!-- provenance table: end -->", doc, re.S)
    assert shown is not None, "docs/weights.md lost its provenance table markers"
    assert shown.group(1) == provenance.markdown_table(), (
        "docs/weights.md's table differs from efficientnet_jax/provenance.py: paste "
        "provenance.markdown_table() between the markers"
    )


def test_every_release_names_known_variants_normalisations_and_preprocessings():
    for release in provenance.RELEASES:
        assert set(release.top1) <= set(scaling.VARIANTS), release.title
        assert release.normalization in normalizations.NAMED_NORMALIZATIONS, release.title
        assert release.eval_preprocessing in input_pipeline.EVAL_PREPROCESSINGS, release.title
        assert release.training in provenance.TRAININGS, release.title
    assert provenance.ADVPROP in provenance.RELEASES


def test_a_family_trains_from_scratch_as_its_imagenet_weights_were_trained():
    """scaling.BASELINES' normalisation and eval preprocessing (the defaults of config.input_normalization
    and config.eval_preprocessing) agree with the table's ImageNet release of every family that has one."""
    for variant in scaling.VARIANTS:
        release = provenance.release(variant)
        baseline = scaling.get_baseline(scaling.variant_coefficients(variant).baseline)
        assert provenance.weights_normalization(variant) == baseline.normalization, variant
        assert release.eval_preprocessing == baseline.eval_preprocessing, variant
        assert release.training in (provenance.IN1K, provenance.IN21K), variant  # V2-XL: ImageNet-21k only
