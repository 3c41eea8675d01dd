"""Wording of synthetic questions and answers, modelled on the real Track 3 phrasing.

Real answers are template sentences rephrased by an LLM, so every family here has many variants that keep
the same facts in the same `[Region k]` form: a model must read the regions, not memorise one sentence.
Only wording lives here; which regions and what answer is decided in questions.py.
"""
from __future__ import annotations

MASK = "<mask>"
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
VIEWPOINT = ("From this viewpoint", "From the image's perspective", "Observing from this perspective",
             "Looking from this angle")
APPROX = ("", "", "about ", "roughly ", "approximately ")


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def masks(n: int) -> str:
    return " ".join([MASK] * n)


def regions(indices) -> str:
    return " ".join(f"[Region {i}]" for i in indices)


def name(cls: str, rng) -> str:
    if cls == "buffer":
        return _pick(rng, ("buffer region",) * 4 + ("buffer zone", "buffer area"))
    return cls


def number(d: float) -> str:
    return str(float(d))  # 6.36, 10.1, 0.0: the shortest form, as in the real answers


# ------------------------------------------------------------------------------------------- left/right
LR_ASK_SIDE = (
    "Is the {a} <mask> to the {side} of the {b} <mask> from the image's perspective?",
    "From this viewpoint, does the {a} <mask> appear on the {side}-hand side of the {b} <mask>?",
    "Can you determine if the {a} <mask> is to the {side} of the {b} <mask> based on the current viewing angle?",
    "Is the {a} <mask> positioned on the {side} side of the {b} <mask> relative to the observer?",
    "Is the {a} <mask> placed to the {side} of the {b} <mask> when looking from this angle?",
    "Does the {a} <mask> appear on the {side} side of the {b} <mask>?",
    "In this view, would you say the {a} <mask> lies to the {side} of the {b} <mask>?",
    "Looking at the picture, is the {a} <mask> further {side} than the {b} <mask>?",
)
LR_ASK_OPEN = (
    "Does the {a} <mask> appear on the left or right side of the {b} <mask>?",
    "Is the {a} <mask> placed to the left or right of the {b} <mask> when looking from this angle?",
    "Is the {a} <mask> to the left or right of the {b} <mask>?",
    "Is the {a} <mask> positioned on the left or right side of the {b} <mask> relative to the observer?",
    "On which side of the {b} <mask> does the {a} <mask> appear from this viewpoint?",
    "Relative to the {b} <mask>, is the {a} <mask> on the left or on the right in this image?",
)
LR_ANSWER = (
    "The {a} [Region 0] is situated on the {rel} of the {b} [Region 1].",
    "The {a} [Region 0] is to the {rel} of the {b} [Region 1].",
    "The {a} [Region 0] is positioned to the {rel} of the {b} [Region 1].",
    "{view}, the {a} [Region 0] is on the {rel} of the {b} [Region 1].",
    "The {a} [Region 0] appears on the {rel} side of the {b} [Region 1].",
    "The {a} [Region 0] lies to the {rel} of the {b} [Region 1].",
    "Seen from here, the {a} [Region 0] is on the {rel}-hand side of the {b} [Region 1].",
)


def left_right_question(rng, a: str, b: str) -> str:
    if rng.random() < 0.6:
        return _pick(rng, LR_ASK_SIDE).format(a=a, b=b, side=_pick(rng, ("left", "right")))
    return _pick(rng, LR_ASK_OPEN).format(a=a, b=b)


def left_right_answer(rng, a: str, b: str, relation: str) -> str:
    return _pick(rng, LR_ANSWER).format(a=a, b=b, rel=relation, view=_pick(rng, VIEWPOINT))


# --------------------------------------------------------------------------------------------- distance
DIST_ASK = (
    "Could you measure the distance between the {a} <mask> and the {b} <mask>?",
    "Give me the distance from the {a} <mask> to the {b} <mask>.",
    "Tell me the distance between the {a} <mask> and the {b} <mask>.",
    "What is the distance between the {a} <mask> and the {b} <mask>?",
    "Can you give me an estimation of the distance between the {a} <mask> and the {b} <mask>?",
    "How far apart are the {a} <mask> and the {b} <mask>?",
    "Can you provide the distance measurement between the {a} <mask> and the {b} <mask>?",
    "Measure the distance from the {a} <mask> to the {b} <mask>.",
    "How far is the {a} <mask> from the {b} <mask>?",
    "How distant is the {a} <mask> from the {b} <mask>?",
    "Can you tell me the distance of the {a} <mask> from the {b} <mask>?",
    "Measure the distance between the {a} <mask> and the {b} <mask>.",
    "How close is the {a} <mask> from the {b} <mask>?",
    "How much distance is there between the {a} <mask> and the {b} <mask>?",
    "Could you provide the distance between the {a} <mask> and the {b} <mask>?",
    "Estimate how many meters separate the {a} <mask> from the {b} <mask>.",
)
DIST_ANSWER = (
    "The {a} [Region {i}] is {d} meters from the {b} [Region {j}].",
    "The {a} [Region {i}] and the {b} [Region {j}] are {d} meters apart.",
    "The {a} [Region {i}] and the {b} [Region {j}] are {d} meters apart from each other.",
    "The distance of the {a} [Region {i}] from the {b} [Region {j}] is {d} meters.",
    "The {a} [Region {i}] is {d} meters away from the {b} [Region {j}].",
    "The distance from the {a} [Region {i}] to the {b} [Region {j}] is {approx}{d} meters.",
    "The distance between the {a} [Region {i}] and the {b} [Region {j}] is {approx}{d} meters.",
    "There is a distance of {d} meters between the {a} [Region {i}] and the {b} [Region {j}].",
    "The spatial distance between the {a} [Region {i}] and the {b} [Region {j}] is {d} meters.",
    "Roughly {d} meters separate the {a} [Region {i}] from the {b} [Region {j}].",
)
DIST_INSIDE = (
    "The {a} [Region {i}] is inside the {b} [Region {j}], so the distance between them is 0.0 meters.",
    "The {a} [Region {i}] sits inside the {b} [Region {j}]; the distance is 0 meters.",
    "Since the {a} [Region {i}] is located inside the {b} [Region {j}], the distance is 0.0 meters.",
    "The {a} [Region {i}] is inside the {b} [Region {j}], so they are 0 meters apart.",
)


def distance_question(rng, a: str, b: str) -> str:
    return _pick(rng, DIST_ASK).format(a=a, b=b)


def distance_answer(rng, a: str, b: str, d: float, i: int, j: int) -> str:
    table = DIST_INSIDE if d == 0 else DIST_ANSWER
    return _pick(rng, table).format(a=a, b=b, i=i, j=j, d=number(d), approx=_pick(rng, APPROX))


PALLET_SIDE = ("[Region {k}] is the {s} pallet.", "Among the pallets, [Region {k}] is the {s} pallet.",
               "From this viewpoint, [Region {k}] is the {s} pallet.", "Looking from this angle, [Region {k}] is the {s} pallet.",
               "[Region {k}] is the {s} pallet among all the pallets.")
BUFFER_SIDE = ("[Region {k}] is the {s} buffer region among all the buffer regions.",
               "From the image's perspective, [Region {k}] is the {s} buffer region.",
               "Observing from this perspective, [Region {k}] is the {s} buffer region.",
               "[Region {k}] is the {s} buffer region from this viewpoint.")
EPB_INTRO = ("Given the buffer regions {B} and the pallets {P}", "Considering the buffer regions {B} and the pallets {P}",
             "Among the buffer regions {B} and pallet masks {P}", "Using the buffer masks {B} and pallet masks {P}")
EPB_ASK = ("how far is the {ps} pallet from the {bs} buffer region?",
           "how much distance is there between the {ps} pallet and the {bs} buffer region?",
           "tell me the distance between the {ps} pallet and the {bs} buffer region.",
           "what is the distance from the {ps} pallet to the {bs} buffer region?")


def extreme_pallet_buffer_question(rng, nb: int, np_: int, p_side: str, b_side: str) -> str:
    if rng.random() < 0.2:
        return (f"How far is the {p_side} pallet from the {b_side} buffer region among the buffer regions "
                f"{masks(nb)} and pallet masks {masks(np_)}?")
    intro = _pick(rng, EPB_INTRO).format(B=masks(nb), P=masks(np_))
    return intro + ", " + _pick(rng, EPB_ASK).format(ps=p_side, bs=b_side)


def extreme_pallet_buffer_answer(rng, kp: int, kb: int, p_side: str, b_side: str, d: float) -> str:
    return " ".join([_pick(rng, PALLET_SIDE).format(k=kp, s=p_side), _pick(rng, BUFFER_SIDE).format(k=kb, s=b_side),
                     distance_answer(rng, "pallet", "buffer region", d, kp, kb)])


EP_ASK = ("Could you measure the distance between the leftmost pallet and the rightmost pallet among the pallets {P}?",
          "Can you provide the distance measurement between the leftmost pallet and the rightmost pallet among the pallets {P}?",
          "Tell me the distance between the leftmost pallet and the rightmost pallet among the pallets {P}.",
          "Give me the distance from the leftmost pallet to the rightmost pallet among the pallets {P}.",
          "Measure the distance from the leftmost pallet to the rightmost pallet among the pallets {P}.",
          "Among the pallets {P}, how far apart are the leftmost one and the rightmost one?")
EP_SIDES = ("[Region {l}] is the leftmost pallet among all the pallets, and [Region {r}] is the rightmost pallet.",
            "From the image's perspective, [Region {l}] is the leftmost pallet, and [Region {r}] is the rightmost pallet.",
            "Among the pallets, [Region {l}] is the leftmost pallet, and [Region {r}] is the rightmost pallet.",
            "Looking from this angle, [Region {l}] is the leftmost pallet, and [Region {r}] is the rightmost pallet.",
            "The leftmost pallet is [Region {l}] and the rightmost one is [Region {r}].")


def extreme_pallets_question(rng, n: int) -> str:
    return _pick(rng, EP_ASK).format(P=masks(n))


def extreme_pallets_answer(rng, kl: int, kr: int, d: float) -> str:
    return _pick(rng, EP_SIDES).format(l=kl, r=kr) + " " + distance_answer(rng, "pallet", "pallet", d, kl, kr)


TB_ASK = ("How far is transporter <mask> from the {s} buffer region among {B}?",
          "How much distance is there between transporter <mask> and the {s} buffer region in {B}?",
          "What is the distance from the transporter <mask> to the {s} buffer region among {B}?")
TB_SIDE = ("The buffer region [Region {k}] is the {s} buffer region from this viewpoint.",
           "From the image's perspective, the buffer region [Region {k}] is the {s} buffer region.",
           "Among the buffer regions, [Region {k}] is the {s} one.")


def transporter_buffer_question(rng, nb: int, side: str) -> str:
    return _pick(rng, TB_ASK).format(s=side, B=masks(nb))


def transporter_buffer_answer(rng, kb: int, side: str, d: float) -> str:
    return _pick(rng, TB_SIDE).format(k=kb, s=side) + " " + distance_answer(rng, "transporter", "buffer region", d, 0, kb)


# ------------------------------------------------------------------------------------------------ count
COUNT_INTRO = ("From the given buffer masks {B} and pallet masks {P}", "Among the given buffer masks {B} and pallet masks {P}",
               "Based on the provided buffer masks {B} and pallet masks {P}", "Given the buffer masks {B} and pallet masks {P}",
               "Using the buffer masks {B} and pallet masks {P}", "Given the buffer regions {B} and the pallets {P}",
               "Considering the buffer regions {B} and the pallets {P}", "With the buffer zones {B} and the pallets {P} in view")
COUNT_ASK = ("how many pallets are within the {sel}", "how many pallets are stored in the {sel}",
             "what is the count of pallets in the {sel}", "how many pallets can be found in the {sel}",
             "how many pallets are situated in the {sel}", "how many pallets are there in the {sel}",
             "how many pallets does the {sel} hold")
COUNT_SELECT = {
    "leftmost": ("left buffer zone", "leftmost buffer", "leftmost buffer area", "leftmost buffer region", "buffer region on the left"),
    "rightmost": ("right buffer zone", "rightmost buffer", "rightmost buffer area", "rightmost buffer region", "buffer region on the right"),
    "middle": ("middle buffer zone", "buffer region in the middle", "central buffer area", "middle buffer region"),
    "closest_to_shelf": ("buffer region closest to the shelf <mask>", "buffer zone nearest to the shelf <mask>",
                         "buffer area closest to the shelf <mask>"),
    "closest_to_side_shelf": ("buffer region closest to the shelf on the {side} among <mask> <mask>",
                              "buffer zone nearest to the {side} shelf among <mask> <mask>"),
}
COUNT_SIDE = ("From this viewpoint, the buffer region [Region {k}] is the {s} buffer region.",
              "The buffer region [Region {k}] is the {s} buffer region among all the buffer regions.",
              "Looking from this angle, the buffer region [Region {k}] is the {s} buffer region.",
              "Among the buffer regions, the buffer region [Region {k}] is the {s} buffer region.",
              "The buffer region [Region {k}] is the {s} buffer region from this viewpoint.",
              "From the image's perspective, the buffer region [Region {k}] is the {s} buffer region.",
              "Observing from this perspective, the buffer region [Region {k}] is the {s} buffer region.")
COUNT_NEAR_SHELF = ("The buffer area [Region {k}] is nearest to the shelf [Region {s}].",
                    "The buffer region [Region {k}] is the closest to the shelf [Region {s}].",
                    "The buffer zone [Region {k}] is the shortest distance from the shelf [Region {s}].",
                    "Of all the buffer regions, [Region {k}] lies closest to the shelf [Region {s}].")
SIDE_SHELF = ("The shelf [Region {s}] is the shelf on the {side}. ", "Of the two shelves, [Region {s}] is the one on the {side}. ")
CONTENTS_MANY = ("The buffer region [Region {k}] is filled with pallets {L}.", "You can find pallets {L} inside the buffer region [Region {k}].",
                 "There are pallets {L} inside the buffer region [Region {k}].", "The pallets {L} are located in the buffer region [Region {k}].",
                 "The pallets {L} are in the buffer region [Region {k}].", "Within the buffer region [Region {k}], there are pallets {L}.",
                 "I see pallets {L} in the buffer region [Region {k}].")
CONTENTS_ONE = ("You can find pallet {L} inside the buffer region [Region {k}].", "There is pallet {L} inside the buffer region [Region {k}].",
                "The pallet {L} is located in the buffer region [Region {k}].",
                "Within the buffer region [Region {k}], there is only the pallet {L}.")
CONTENTS_NONE = ("None of the pallets are inside the buffer region [Region {k}].",
                 "The buffer region [Region {k}] does not hold any of the pallets.", "I see no pallets in the buffer region [Region {k}].")
COUNT_END = ("Therefore, the buffer area [Region {k}] has {N} {pl}.", "Hence, in buffer area [Region {k}], there {are} exactly {N} {pl}.",
             "Hence, there {are} {N} {pl} in the buffer area [Region {k}].",
             "Therefore, {N} {pl} {have} been positioned in the buffer area [Region {k}].",
             "Thus, there {are} {N} {pl} in the buffer area [Region {k}].",
             "Therefore, the buffer region [Region {k}] holds a total of {N} {pl}.",
             "It means that there {are} {N} {pl} in the buffer zone [Region {k}].",
             "Thus, the buffer region [Region {k}] is storing {N} {pl} at the moment.")


def count_question(rng, nb: int, np_: int, select: str, side: str | None) -> str:
    sel = _pick(rng, COUNT_SELECT[select]).format(side=side)
    intro = _pick(rng, COUNT_INTRO).format(B=masks(nb), P=masks(np_))
    return f"{intro}, {_pick(rng, COUNT_ASK).format(sel=sel)}?"


def count_answer(rng, select: str, kb: int, inside: list[int], anchor: int | None, side: str | None) -> str:
    if select in ("leftmost", "rightmost", "middle"):
        first = _pick(rng, COUNT_SIDE).format(k=kb, s=select)
    else:
        first = _pick(rng, COUNT_NEAR_SHELF).format(k=kb, s=anchor)
        if side is not None:
            first = _pick(rng, SIDE_SHELF).format(s=anchor, side=side) + first
    n = len(inside)
    table = CONTENTS_NONE if n == 0 else CONTENTS_ONE if n == 1 else CONTENTS_MANY
    contents = _pick(rng, table).format(k=kb, L=regions(inside))
    end = _pick(rng, COUNT_END).format(k=kb, N=NUMBER_WORDS[n], pl="pallet" if n == 1 else "pallets",
                                       are="is" if n == 1 else "are", have="has" if n == 1 else "have")
    return f"{first} {contents} {end}"


# -------------------------------------------------------------------------------------------------- mcq
EXTREME_ASK = {
    "leftmost": ("Among {L}, which one is the leftmost object from the image's perspective?",
                 "Which object is the leftmost among {L} from this viewpoint?",
                 "Looking from this perspective, which of {L} is the leftmost?",
                 "From the image's point of view, which of {L} is positioned the furthest to the left?",
                 "Among {L}, which one appears on the leftmost side?",
                 "Observing from this viewpoint, which of {L} is located at the leftmost position?",
                 "Which among {L} is situated on the extreme left from the observer's perspective?",
                 "Among {L}, which object appears closest to the left side?"),
    "rightmost": ("Among {L}, which one is the rightmost object from the image's perspective?",
                  "Which object is the rightmost among {L} from this viewpoint?",
                  "Looking from this perspective, which of {L} is the rightmost?",
                  "From this angle, which of {L} is positioned the furthest to the right?",
                  "Among {L}, which one appears on the rightmost side?",
                  "Observing from this viewpoint, which of {L} is located at the rightmost position?",
                  "Which among {L} is situated on the extreme right from the observer's perspective?",
                  "Among {L}, which object appears closest to the right side?"),
    "middle": ("Among {L}, which one is in the middle from the image's perspective?",
               "Which object lies in the middle among {L} from this viewpoint?",
               "Looking from left to right, which of {L} is the middle one?",
               "From the image's point of view, which of {L} is positioned in the middle horizontally?"),
}
EXTREME_ANSWER = ("The {c} [Region {k}] is the {s} object from this viewpoint.", "The {c} [Region {k}] is the {s} object.",
                  "{view}, the {c} [Region {k}] is the {s} object.", "The {c} [Region {k}] is the {s} object among {L}.",
                  "Among {L}, the {c} [Region {k}] is the {s} object.")


def _listing(names: list[str], refs: list[str]) -> str:
    items = [f"the {n} {r}" for n, r in zip(names, refs)]
    if len(items) == 2:
        return f"{items[0]} and {items[1]}"
    return ", ".join(items[:-1]) + ", and " + items[-1]


def mcq_extreme_question(rng, names: list[str], select: str) -> str:
    return _pick(rng, EXTREME_ASK[select]).format(L=_listing(names, [MASK] * len(names)))


def mcq_extreme_answer(rng, names: list[str], select: str, k: int) -> str:
    listing = _listing(names, [f"[Region {i}]" for i in range(len(names))])
    return _pick(rng, EXTREME_ANSWER).format(c=names[k], k=k, s=select, L=listing, view=_pick(rng, VIEWPOINT))


BS_ASK = ("Which buffer zone in {B} is nearest to the shelf <mask>?", "Which buffer region from {B} is positioned closest to the shelf <mask>?",
          "Among the buffer regions {B}, which one is the closest to the shelf <mask>?",
          "Which of the buffer areas {B} lies nearest to the shelf <mask>?")
BS_ANSWER = ("The buffer region [Region {k}] is the closest to the shelf [Region {s}].",
             "The buffer zone [Region {k}] is nearest to the shelf [Region {s}].",
             "Of all the buffer regions, [Region {k}] is the shortest distance from the shelf [Region {s}].")


def buffer_shelf_question(rng, nb: int) -> str:
    return _pick(rng, BS_ASK).format(B=masks(nb))


def buffer_shelf_answer(rng, k: int, nb: int) -> str:
    return _pick(rng, BS_ANSWER).format(k=k, s=nb)


PICK_T_FIRST = ("Given the available transporters {T} and pallets {P}, which pallet is the best choice for automated pickup by an empty transporter?",
                "Given the transporters {T} and the pallets {P}, which pallet is best suited for automated picking by an empty transporter?",
                "Considering the transporters {T} and the pallets {P}, which pallet is the optimal choice for an empty transporter to pick up?",
                "With the transporters {T} and the pallets {P} in view, which pallet should an empty transporter collect first?")
PICK_P_FIRST = ("Which pallet from {P} is the most suitable for the transporter at <mask> to pick up?",
                "Which of the pallets {P} is the best choice for the transporter <mask> to pick up?",
                "Among the pallets {P}, which one should the transporter <mask> collect first?")
PICK_BARE = ("Considering the placement of {P}, which pallet is the most convenient for <mask> to collect?",
             "Looking at {P}, which pallet would be the easiest for <mask> to pick up?")
PICK_EMPTY = ("The transporter [Region {t}] is not transporting any boxes.", "The transporter [Region {t}] is currently empty.",
              "Only the transporter [Region {t}] carries no load.")
PICK_BEST = ("The pallet [Region {p}] is the closest to transporter [Region {t}], so it is the most suitable choice for automated picking.",
             "The pallet [Region {p}] is the shortest distance from the transporter [Region {t}], making it the best candidate for pickup.",
             "The pallet [Region {p}] is nearest to the transporter [Region {t}], making it the best choice to pick up first.",
             "Since the pallet [Region {p}] is closest to the transporter [Region {t}], it is the best pallet to collect.")


def pickup_question_transporters_first(rng, nt: int, np_: int) -> str:
    return _pick(rng, PICK_T_FIRST).format(T=masks(nt), P=masks(np_))


def pickup_question_pallets_first(rng, np_: int, bare: bool) -> str:
    return _pick(rng, PICK_BARE if bare else PICK_P_FIRST).format(P=masks(np_))


def pickup_answer(rng, kp: int, kt: int, announce_empty: bool) -> str:
    best = _pick(rng, PICK_BEST).format(p=kp, t=kt)
    return (_pick(rng, PICK_EMPTY).format(t=kt) + " " + best) if announce_empty else best
