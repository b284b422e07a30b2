"""The packaged all-MiniLM-L6-v2 fallback: loaded by RERANK_MODEL=auto, ranks the relevant document first."""

from __future__ import annotations

import logging

import pytest

from schemas.settings import ModelSettings
from serve_app.engine import ScoreRequest, load_engine

# (query, relevant document, distractors)
SETS = [
    (
        "What is the capital of France?",
        "Paris is the capital and largest city of France.",
        ["Berlin is known for its museums.", "France produces a lot of wine.", "The Eiffel Tower was painted brown."],
    ),
    (
        "How do I boil an egg?",
        "Place the egg in boiling water for about nine minutes, then cool it.",
        ["Chickens are domesticated birds.", "An omelette needs a hot pan.", "Eggplants are purple vegetables."],
    ),
    (
        "symptoms of the flu",
        "Influenza typically causes fever, cough, sore throat and muscle aches.",
        ["Flu shots are offered every autumn.", "The bird flew over the lake.", "Doctors work in hospitals."],
    ),
    (
        "python list sort descending",
        "Use sorted(items, reverse=True) or items.sort(reverse=True) in Python.",
        ["Pythons are large constricting snakes.", "Lists are written in square brackets.", "Java has ArrayList."],
    ),
    (
        "who wrote Hamlet",
        "Hamlet is a tragedy written by William Shakespeare around 1600.",
        ["A hamlet is a small village.", "Denmark is a Nordic country.", "Macbeth is set in Scotland."],
    ),
    (
        "how to reset a router",
        "Hold the reset button on the back of the router for ten seconds until the lights blink.",
        ["Routers forward packets between networks.", "Woodworking routers shape edges.", "Wi-Fi 6 is faster."],
    ),
    (
        "best time to visit Japan for cherry blossoms",
        "Cherry blossoms in Japan usually bloom from late March to early April.",
        ["Japan has four main islands.", "Cherries are rich in vitamin C.", "Tokyo has a large subway network."],
    ),
    (
        "what causes rain",
        "Rain forms when water vapour condenses into droplets heavy enough to fall from clouds.",
        ["Umbrellas protect you from rain.", "Deserts receive little precipitation.", "Rainbows have seven colours."],
    ),
    (
        "exchange rate euro dollar",
        "The euro to US dollar exchange rate changes daily on currency markets.",
        ["The euro was introduced in 1999.", "Dollar stores sell cheap goods.", "Banks offer savings accounts."],
    ),
    (
        "how many legs does a spider have",
        "Spiders have eight legs, unlike insects which have six.",
        ["Spider-Man is a comic book hero.", "Ants live in colonies.", "Webs are made of silk."],
    ),
    (
        "train ticket refund policy",
        "Train tickets can be refunded up to 24 hours before departure for a small fee.",
        ["Trains run on rails.", "Personal trainers plan workouts.", "Airline tickets are often non-refundable."],
    ),
    (
        "speed of light",
        "Light travels at about 299,792 kilometres per second in a vacuum.",
        ["Light bulbs use electricity.", "Sound is slower than a jet.", "The sun is a star."],
    ),
]


@pytest.fixture(scope="module")
def minilm():
    return load_engine(ModelSettings(model="auto"))


def test_auto_falls_back_to_packaged_minilm_with_warning(caplog):
    with caplog.at_level(logging.WARNING):
        eng = load_engine(ModelSettings(model="auto"))
    assert eng.info.fallback is True and eng.info.kind == "bi-encoder"
    assert "FALLBACK" in caplog.text and "RERANK_MODEL" in caplog.text


def test_relevant_document_ranks_first(minilm):
    reqs = [ScoreRequest(q, [*distractors[:2], relevant, distractors[2]]) for q, relevant, distractors in SETS]
    for (q, _, _), scores in zip(SETS, minilm.score_many(reqs)):
        assert max(range(4), key=scores.__getitem__) == 2, (q, scores)
