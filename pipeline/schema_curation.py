"""`CurateInferredSchema`: make a SchemaGen-inferred schema fit free-text features.

tfdv infers a string domain for every bytes feature with few distinct values in the train
split. For `label` that is right (a test label never seen in training is an anomaly), but for
`record_id`, `title`, `tags` and `image` it is wrong: every new record id or title would be
an "Unexpected string values" anomaly, and on small data a clean test split fails validation.
This step drops those domains and passes the rest of the schema through unchanged. With
`keep_label_domain=False` (the pipeline's `allow_unseen_labels`) it drops the label's domain
too, so that eval/test classes missing from train are allowed under `--schema infer` as well;
UnseenLabelValidator still checks the splits that are not allowed.
"""
import os

from tfx import v1 as tfx

from sicot import contract

FREE_TEXT_FEATURES = (contract.IMAGE_KEY, contract.TITLE_KEY, contract.TAGS_KEY,
                      contract.RECORD_ID_KEY)
SCHEMA_FILE = "schema.pbtxt"


def drop_free_text_domains(schema, keep_label_domain: bool = True):
    """Removes the string domains of FREE_TEXT_FEATURES (and of the label unless
    keep_label_domain) from a Schema proto (in place)."""
    dropped_features = FREE_TEXT_FEATURES + (() if keep_label_domain else (contract.LABEL_KEY,))
    dropped_names = set()
    for feature in schema.feature:
        if feature.name in dropped_features:
            if feature.HasField("domain"):
                dropped_names.add(feature.domain)
            feature.ClearField("domain_info")
    still_used = {f.domain for f in schema.feature if f.HasField("domain")}
    kept = [d for d in schema.string_domain
            if d.name not in dropped_names or d.name in still_used]
    del schema.string_domain[:]
    schema.string_domain.extend(kept)
    return schema


@tfx.dsl.components.component
def CurateInferredSchema(  # noqa: N802 - TFX component names are classes
    schema: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Schema],
    curated_schema: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Schema],
    keep_label_domain: tfx.dsl.components.Parameter[bool] = True,
) -> None:
    """Drops the inferred string domains of free-text features (see the module docstring)."""
    from tfx.utils import io_utils

    proto = io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(schema.uri))
    io_utils.write_pbtxt_file(os.path.join(curated_schema.uri, SCHEMA_FILE),
                              drop_free_text_domains(proto, keep_label_domain))
