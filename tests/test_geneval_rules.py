"""GenEval's prompt templates parsed into requirements, and the rules checked on hand-made detections."""
import pytest

from tts.verifiers.geneval_rules import Detection, PromptError, Requirement, Spec, check, parse, relative_position


def det(noun, box, score=0.9, colour=None):
    return Detection(noun=noun, score=score, box=box, colour=colour)


@pytest.mark.parametrize("prompt,spec", [
    ("a photo of a cat", Spec(include=(Requirement("cat"),))),
    ("a photo of an apple", Spec(include=(Requirement("apple"),))),
    ("a photo of two cats", Spec(include=(Requirement("cat", 2),), exclude=(("cat", 3),))),
    ("a photo of four wine glasses", Spec(include=(Requirement("wine glass", 4),), exclude=(("wine glass", 5),))),
    ("a photo of three benches", Spec(include=(Requirement("bench", 3),), exclude=(("bench", 4),))),
    ("A photo of a red car.", Spec(include=(Requirement("car", colour="red"),))),
    ("a photo of a red car and a blue bench",
     Spec(include=(Requirement("car", colour="red"), Requirement("bench", colour="blue")))),
    ("a photo of a cat and a traffic light", Spec(include=(Requirement("cat"), Requirement("traffic light")))),
    ("a photo of a dog left of a cat",
     Spec(include=(Requirement("cat"), Requirement("dog", relation="left of", target=0)))),
    ("a photo of a teddy bear below a potted plant",
     Spec(include=(Requirement("potted plant"), Requirement("teddy bear", relation="below", target=0)))),
])
def test_geneval_templates_parse_into_requirements(prompt, spec):
    assert parse(prompt) == spec


@pytest.mark.parametrize("prompt,match", [
    ("an astronaut riding a horse", "want 'a photo of ...'"),
    ("a photo of cats", "cannot read 'cats'"),
    ("a photo of some cats", "starts with 'some'"),
    ("a photo of a cat and a dog and a bird", "at most two objects"),
])
def test_prompts_outside_the_templates_are_refused_naming_why(prompt, match):
    with pytest.raises(PromptError, match=match):
        parse(prompt)


def test_relative_position_follows_geneval():
    left, right = det("dog", (0, 40, 20, 60)), det("cat", (60, 40, 80, 60))
    assert relative_position(left, right) == {"left of"} and relative_position(right, left) == {"right of"}
    top, bottom = det("a", (40, 0, 60, 20)), det("b", (40, 70, 60, 90))
    assert relative_position(top, bottom) == {"above"}
    assert relative_position(det("a", (0, 0, 20, 20)), det("b", (60, 60, 80, 80))) == {"left of", "above"}
    assert relative_position(det("a", (0, 0, 50, 50)), det("b", (5, 5, 55, 55))) == set()  # within the margin


def test_counting_wants_exactly_the_number_and_names_each_failure():
    spec = parse("a photo of two cats")
    two = [det("cat", (0, 0, 10, 10)), det("cat", (20, 0, 30, 10))]
    assert check(spec, two).correct == 1.0
    v = check(spec, two + [det("cat", (40, 0, 50, 10))])
    assert v.correct == 0.0 and v.failed == ["cat: want fewer than 3, found 3"] and v.criteria_met == 0.5
    v = check(spec, two[:1] + [det("dog", (40, 0, 50, 10))])
    assert v.failed == ["cat: want 2, found 1"]


def test_colour_is_checked_on_the_found_objects():
    spec = parse("a photo of a red car and a blue bench")
    good = [det("car", (0, 0, 10, 10), colour="red"), det("bench", (20, 0, 30, 10), colour="blue")]
    assert check(spec, good).explanation() == "all 4 requirements met"
    bad = [det("car", (0, 0, 10, 10), colour="green"), det("bench", (20, 0, 30, 10), colour="blue")]
    v = check(spec, bad)
    assert v.failed == ["1 red car: colours found 1 green"] and v.criteria_met == 0.75
    # the highest-scoring car is the one checked (GenEval takes the first `count` detections)
    two_cars = [det("car", (0, 0, 10, 10), 0.5, "red"), det("car", (40, 0, 50, 10), 0.8, "pink"), good[1]]
    assert check(spec, two_cars).failed == ["1 red car: colours found 1 pink"]


def test_position_needs_both_objects_and_the_relation():
    spec = parse("a photo of a dog left of a cat")
    dog, cat = det("dog", (0, 40, 20, 60)), det("cat", (60, 40, 80, 60))
    assert check(spec, [dog, cat]).correct == 1.0
    v = check(spec, [det("dog", (60, 40, 80, 60)), det("cat", (0, 40, 20, 60))])
    assert v.failed == ["dog left of cat: found right of"]
    v = check(spec, [dog])
    assert v.failed == ["cat: want 1, found 0", "dog left of cat: no cat to place it by"]
