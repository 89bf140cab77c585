"""Helpers of the demo tests: what a person caption says, read with persons.md's phrase list."""


def bits(vector: str) -> list[int]:
    return [int(b) for b in vector.split(",")]


def decode_person_caption(text: str) -> dict:
    """What a caption says, read with persons.md's phrase list (independently of the generator)."""
    s1, s2 = text.split(". ", 1)
    said = {"female": s1.startswith(("A female", "A walking woman", "A pedestrian who is female"))}
    male = s1.startswith(("A male", "A walking man", "A pedestrian who is male"))
    assert said["female"] != male, text
    assert ("his " if said["female"] else "her ") not in s1, text
    assert s2.startswith("She is " if said["female"] else "He is "), text
    ages = {1: ("elderly", "60 or older", "least 60", "over 60"), 2: ("18-60", "between 18 and 60"),
            3: ("a minor", "18 or younger", "not an adult", "less than 18")}
    said["age"] = [k for k, words in ages.items() if any(w in s1 for w in words)]
    said["orientation"] = [k for k, w in ((4, "facing the camera"), (5, "standing sideways"),
                                          (6, "back to the camera")) if w in s1]
    said["item"] = [k for k, w in ((9, "handbag"), (10, "shoulder"), (11, "backpack"), (12, "holds objects"))
                    if w in s1]
    body = s2.split(" is ", 1)[1].rstrip(".")
    if body.startswith("wearning "):
        names = {"a hat": 7, "glasses": 8, "a longcoat": 19, "a coat that is long": 19, "boots": "boots"}
        said["accessories"] = [names[p] for p in body[len("wearning "):].split(",")]
    else:
        assert body.startswith("in "), text
        said["sleeve"] = [k for k, w in ((13, "short sleeve"), (14, "long sleeve")) if w in body]
        said["pattern"] = [k for k, w in ((15, "stripe"), (16, "logo"), (17, "plaid"), (18, "splice"))
                           if w in body]
        said["skirt"] = "skirt or dress" in body
    return said


def check_caption_against_truth(text: str, v: list[int], boots: bool) -> None:
    said = decode_person_caption(text)
    assert said["female"] == bool(v[0])
    assert said["age"] == [k for k in (1, 2, 3) if v[k]]
    assert said["orientation"] == [k for k in (4, 5, 6) if v[k]]
    assert said["item"] == [k for k in (9, 10, 11, 12) if v[k]][:1]  # priority: only the first
    accessories = [k for k in (7, 8, 19) if v[k]] + (["boots"] if boots else [])
    if accessories:
        assert said.get("accessories") == accessories, text
    else:
        assert "accessories" not in said, text
        assert said["sleeve"] == [k for k in (13, 14) if v[k]]
        assert said["pattern"] == [k for k in (15, 16, 17, 18) if v[k]]
        assert said["skirt"] == bool(v[20])
