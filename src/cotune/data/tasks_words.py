"""Word problems: unit rates, ratios, speed/distance/time, making change, averages and 2-4
step combinations, and the wording helpers the percentage tasks share
(:mod:`cotune.data.tasks_percent`).

Same contract as :mod:`cotune.data.tasks_arith`: short labelled claims that
:mod:`cotune.verify` can check, and an independent exact ``check`` of the answer.
"""

from __future__ import annotations

import random
from fractions import Fraction as F

from cotune.data import steps as S
from cotune.data.phrasing import ITEMS, NAMES, HeldOut, a_, phrase, spell
from cotune.data.tasks_arith import Problem
from cotune.format import format_number as fmt

GOODS = ("shirt", "bag", "lamp", "jacket", "chair", "phone case", "watch", "backpack", "kettle")


def money(x: F | int, cur: str) -> str:
    """Prices as people write them: $80, $2.50, ₹1200."""
    x = F(x)
    return f"{cur}{x.numerator}" if x.denominator == 1 else f"{cur}{float(x):.2f}"


def say(*parts: str) -> str:
    """Labelled steps: ``Discount: 80 * 25 / 100 = 20. Price: 80 - 20 = 60.``"""
    return " ".join(p.rstrip(".") + "." for p in parts)


def lab(label: str, claims: list[str]) -> str:
    """One labelled step made of one or more claims: ``Price: 280 - 50 = 230, 230 - 6 = 224``."""
    return f"{label}: " + ", ".join(claims) if label else ", ".join(claims)


def total_of(xs: list[int]) -> list[str]:
    """A running sum, one addition per claim: ``12 + 7 = 19, 19 + 15 = 34``."""
    if not S.small():
        return [f"{' + '.join(map(str, xs))} = {sum(xs)}"]
    out, cur = [], xs[0]
    for x in xs[1:]:
        out += S.worked(cur, "+", x)
        cur += x
    return out


def currency(rng: random.Random) -> str:
    return rng.choice(("$", "₹"))


# --------------------------------------------------------------------------- rates


def unit_rate(rng: random.Random, d: int) -> Problem:
    cur, (one, many) = currency(rng), rng.choice(ITEMS)
    unit = F(rng.randint(2, 12)) if d < 3 else F(rng.randrange(25, 500, 25), 100)
    k = rng.randint(2, 9) if d == 1 else rng.randint(3, 20)
    m = rng.choice([i for i in range(2, 25) if i != k])
    total = unit * k
    name, age = rng.choice(NAMES), rng.randint(7, 15)
    q = phrase(
        rng,
        (
            f"{k} {many} cost {money(total, cur)}. How much do {m} {many} cost?",
            f"If {k} {many} cost {money(total, cur)}, what is the price of {m} {many}?",
            f"{rng.choice(NAMES)} paid {money(total, cur)} for {k} {many}. At the same price, how much would {m} {many} cost?",
            f"At the market, {k} {many} sell for {money(total, cur)}. What do {m} {many} cost?",
            f"{name}, who is {age}, buys {k} {many} for {money(total, cur)}. What would {m} {many} cost at the same price each?",
            f"The price of {spell(k)} {many} is {money(total, cur)}. How much would {m} {many} cost?",
            HeldOut(f"Every {one} costs the same. If a bag of {k} {many} is {money(total, cur)}, how much are {m} {many}?"),
            HeldOut(f"{money(total, cur)} buys {k} {many}. How much money buys {m} {many}?"),
        ),
    )  # fmt: skip
    steps = [
        lab(f"One {one}", S.worked(total, "/", k)),
        lab(f"{m} {many}", S.worked(unit, "*", m)),
    ]
    return Problem(q, say(*steps), unit * m, F(total) * m / k)


def ratio(rng: random.Random, d: int) -> Problem:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    n1, n2 = rng.sample(NAMES, 2)
    if d < 3:
        unit = rng.randint(2, 20) if d == 1 else rng.randint(5, 60)
        total = (a + b) * unit
        who, part = (n1, a) if rng.random() < 0.5 else (n2, b)
        cur = currency(rng)
        age = rng.randint(7, 15)
        q = phrase(
            rng,
            (
                f"{n1} and {n2} share {money(total, cur)} in the ratio {a}:{b}. How much does {who} get?",
                f"{money(total, cur)} is split between {n1} and {n2} in the ratio {a}:{b}. What is {who}'s share?",
                f"{n1} and {n2} split {money(total, cur)} so that for every {a} that {n1} gets, {n2} gets {b}. How much does {who} get?",
                f"{money(total, cur)} is divided between {n1} and {n2}, {a}:{b}. How much goes to {who}?",
                f"{n1}, aged {age}, and {n2} share {money(total, cur)} in the ratio {a}:{b}. What is {who}'s share?",
                HeldOut(f"A prize of {money(total, cur)} goes to {n1} and {n2} in proportion {a} to {b}. What does {who} receive?"),
                HeldOut(f"{n1} and {n2} put money into a stall in the ratio {a}:{b}, and it earns {money(total, cur)}, divided the same way. How much is {who}'s part?"),
            ),
        )  # fmt: skip
        steps = [
            f"Parts: {a} + {b} = {a + b}",
            lab("One part", S.worked(total, "/", a + b)),
            lab(who, S.worked(unit, "*", part)),
        ]
        return Problem(q, say(*steps), F(unit * part), F(total) * part / (a + b))
    unit = rng.randint(2, 15)
    boys = a * unit
    q = phrase(
        rng,
        (
            f"The ratio of boys to girls in a club is {a}:{b}. There are {boys} boys. How many girls are there?",
            f"In a class the ratio of boys to girls is {a}:{b}. If there are {boys} boys, how many girls are in the class?",
            f"A club has boys and girls in the ratio {a} to {b}. It has {boys} boys. How many girls does it have?",
            HeldOut(f"Boys and girls in a choir are in the proportion {a} : {b}, and {boys} boys sing in it. How many girls sing in it?"),
            HeldOut(f"A school bus carries {boys} boys, and the boys and girls on it are in the ratio {a}:{b}. How many girls does it carry?"),
        ),
    )  # fmt: skip
    steps = [lab("One part", S.worked(boys, "/", a)), lab("Girls", S.worked(unit, "*", b))]
    return Problem(q, say(*steps), F(unit * b), F(boys) * b / a)


def speed(rng: random.Random, d: int) -> Problem:
    v = rng.randrange(20, 120, 5)
    if d == 1:
        t = rng.randint(2, 6)
        if rng.random() < 0.5:
            q = phrase(
                rng,
                (
                    f"A car travels at {v} km/h for {t} hours. How far does it go in km?",
                    f"How many km does a train going {v} km/h cover in {t} hours?",
                    f"{rng.choice(NAMES)} drives for {spell(t)} hours at {v} km/h. How many km is that?",
                    HeldOut(f"A truck keeps a steady {v} km/h from 1 pm to {1 + t} pm. What distance in km does it cover?"),
                    HeldOut(f"A boat moves at {v} km/h. After {t} hours, how many km has it gone?"),
                ),
            )  # fmt: skip
            return Problem(q, say(lab("Distance", S.worked(v, "*", t))), F(v * t), F(v) * t)
        q = phrase(
            rng,
            (
                f"A train covers {v * t} km in {t} hours. What is its average speed in km/h?",
                f"A car goes {v * t} km in {t} hours at a steady speed. How fast is it going in km/h?",
                f"{rng.choice(NAMES)} rides a motorbike {v * t} km in {spell(t)} hours. What is the average speed in km/h?",
                HeldOut(f"In {t} hours a bus travels {v * t} km. How many km does it travel each hour on average?"),
                HeldOut(f"What steady speed in km/h gets you {v * t} km in {t} hours?"),
            ),
        )  # fmt: skip
        return Problem(q, say(lab("Speed", S.worked(v * t, "/", t))), F(v), F(v * t, t))
    if d == 2:
        mins = rng.choice((15, 30, 45, 90, 120, 150))
        h = F(mins, 60)
        if rng.random() < 0.5:
            name, age = rng.choice(NAMES), rng.randint(16, 70)
            q = phrase(
                rng,
                (
                    f"A cyclist rides at {v} km/h for {mins} minutes. How many km does she ride?",
                    f"A car drives for {mins} minutes at {v} km/h. How many km does it travel?",
                    f"{name}, who is {age}, rides a scooter at {v} km/h for {mins} minutes. How far in km does {name} go?",
                    HeldOut(f"How many km do you cover in {mins} minutes at a steady {v} km/h?"),
                    HeldOut(f"A train keeps to {v} km/h for {mins} minutes. What distance, in km, does it cover?"),
                ),
            )  # fmt: skip
            steps = [f"Hours: {mins} / 60 = {fmt(h)}", lab("Distance", S.worked(v, "*", h))]
            return Problem(q, say(*steps), v * h, F(v * mins, 60))
        t = rng.randint(2, 8)
        q = phrase(
            rng,
            (
                f"How many hours does it take to drive {v * t} km at {v} km/h?",
                f"A bus travels {v * t} km at {v} km/h. How many hours does the trip take?",
                f"At {v} km/h, how long in hours is a {v * t} km journey?",
                HeldOut(f"{rng.choice(NAMES)} must cover {v * t} km and drives at {v} km/h the whole way. How many hours will that take?"),
                HeldOut(f"A ship sails at {v} km/h. How many hours does it need for {v * t} km?"),
            ),
        )  # fmt: skip
        return Problem(q, say(lab("Time", S.worked(v * t, "/", v))), F(t), F(v * t, v))
    v2 = rng.randrange(20, 120, 5)
    t1, t2 = rng.randint(1, 5), rng.randint(1, 5)
    d1, d2 = v * t1, v2 * t2
    q = phrase(
        rng,
        (
            f"A bus goes {d1} km at {v} km/h, then {d2} km at {v2} km/h. How many hours does the trip take?",
            f"{rng.choice(NAMES)} drives {d1} km at {v} km/h and then {d2} km at {v2} km/h. What is the total driving time in hours?",
            HeldOut(f"A trip has two parts: {d1} km at {v} km/h and {d2} km at {v2} km/h. How long is the whole trip in hours?"),
            HeldOut(f"A truck covers the first {d1} km of a route at {v} km/h and the last {d2} km at {v2} km/h. How many hours is it on the road?"),
        ),
    )  # fmt: skip
    steps = [f"{d1} / {v} = {t1}", f"{d2} / {v2} = {t2}", f"Total: {t1} + {t2} = {t1 + t2}"]
    return Problem(q, say(*steps), F(t1 + t2), F(d1, v) + F(d2, v2))


def change(rng: random.Random, d: int) -> Problem:
    cur, name, (one, many) = currency(rng), rng.choice(NAMES), rng.choice(ITEMS)
    if d == 1:
        p = rng.randint(1, 18)
        paid = rng.choice([x for x in (5, 10, 20, 50) if x > p])
        age = rng.randint(7, 15)
        q = phrase(
            rng,
            (
                f"{name} buys {a_(one)} for {money(p, cur)} and pays with {money(paid, cur)}. How much change does {name} get?",
                f"{name} pays for {a_(one)} costing {money(p, cur)} with a {money(paid, cur)} note. How much money comes back?",
                f"{a_(one).capitalize()} is {money(p, cur)}. {name} hands over {money(paid, cur)}. What change should {name} receive?",
                f"{name}, aged {age}, buys {a_(one)} for {money(p, cur)} using {money(paid, cur)}. How much change is due?",
                HeldOut(f"{name} gives the cashier {money(paid, cur)} for {a_(one)} priced at {money(p, cur)}. How much should the cashier give back?"),
                HeldOut(f"How much is returned from {money(paid, cur)} after paying {money(p, cur)} for {a_(one)}?"),
            ),
        )  # fmt: skip
        return Problem(q, say(lab("Change", S.worked(paid, "-", p))), F(paid - p), F(paid) - p)
    if d == 2:
        k, p = rng.randint(2, 9), rng.randint(2, 15)
        paid = rng.choice([x for x in (20, 50, 100, 200) if x > k * p])
        q = phrase(
            rng,
            (
                f"{name} buys {k} {many} at {money(p, cur)} each and pays with {money(paid, cur)}. How much change is there?",
                f"{name} gets {k} {many} costing {money(p, cur)} each and hands over {money(paid, cur)}. How much change is due?",
                f"{name} buys {spell(k)} {many} for {money(p, cur)} apiece and pays {money(paid, cur)}. What change does {name} get?",
                HeldOut(f"{k} {many} at {money(p, cur)} each are paid for with {money(paid, cur)}. How much money comes back?"),
                HeldOut(f"{name} has {money(paid, cur)} and buys {k} {many} priced at {money(p, cur)} each. How much money does {name} have left?"),
            ),
        )  # fmt: skip
        steps = [lab("Cost", S.worked(k, "*", p)), lab("Change", S.worked(paid, "-", k * p))]
        return Problem(q, say(*steps), F(paid - k * p), F(paid) - F(k) * p)
    k = rng.randint(2, 5)
    p1, p2 = F(rng.randrange(50, 1000, 25), 100), F(rng.randrange(50, 1000, 25), 100)
    cost = k * p1 + p2
    paid = next(x for x in (10, 20, 50, 100) if x > cost)
    q = phrase(
        rng,
        (
            f"{name} buys {k} {many} at {money(p1, cur)} each and a snack for {money(p2, cur)}, paying with {money(paid, cur)}. How much change does {name} get?",
            f"{name} pays {money(paid, cur)} for {k} {many} at {money(p1, cur)} each plus a snack at {money(p2, cur)}. What is the change?",
            HeldOut(f"{k} {many} cost {money(p1, cur)} each and a snack costs {money(p2, cur)}. {name} pays for all of them with {money(paid, cur)}. How much comes back?"),
            HeldOut(f"With {money(paid, cur)}, {name} buys a snack for {money(p2, cur)} and {k} {many} at {money(p1, cur)} each. How much money is left?"),
        ),
    )  # fmt: skip
    steps = [
        f"{k} * {fmt(p1)} = {fmt(k * p1)}",
        f"{fmt(k * p1)} + {fmt(p2)} = {fmt(cost)}",
        f"Change: {paid} - {fmt(cost)} = {fmt(paid - cost)}",
    ]
    return Problem(q, say(*steps), paid - cost, F(paid) - k * p1 - p2)


def average(rng: random.Random, d: int) -> Problem:
    name = rng.choice(NAMES)
    if d < 3:
        n = rng.choice((2, 3)) if d == 1 else rng.choice((4, 5))
        hi = 20 if d == 1 else 100
        xs = [rng.randint(1, hi) for _ in range(n)]
        if d == 1:
            xs[-1] += (-sum(xs)) % n  # a whole-number mean at level 1
        s = sum(xs)
        listed = ", ".join(map(str, xs[:-1])) + f" and {xs[-1]}"
        age = rng.randint(7, 15)
        q = phrase(
            rng,
            (
                f"What is the average of {listed}?",
                f"{name} scored {listed} in {n} games. What is the mean score?",
                f"Find the mean of {listed}.",
                f"{name}'s test marks are {listed}. What is the average mark?",
                f"The temperatures on {n} days were {listed} degrees. What was the mean temperature?",
                f"{name}, who is {age}, scored {listed} in {spell(n)} quizzes. What is the average score?",
                HeldOut(f"If the numbers {listed} were evened out so that all {n} of them are equal, what would each one be?"),
                HeldOut(f"{n} sacks hold {listed} kg of rice. If the rice is shared out equally between the sacks, how many kg does each hold?"),
            ),
        )  # fmt: skip
        # The count is stated: dividing by the wrong count was the commonest error here. In
        # the ``tool`` style each number is counted as it is copied (``78 (1), 45 (2)``): a
        # model trained on a bare ``Count: 4`` wrote 3 for four and five numbers alike.
        count = (
            "Count: " + ", ".join(f"{x} ({i})" for i, x in enumerate(xs, 1)) + f", so {n}"
            if S.tool()
            else f"Count: {n}"
        )
        steps = [lab("Sum", total_of(xs)), count, lab("Mean", S.worked(s, "/", n))]
        return Problem(q, say(*steps), F(s, n), sum(map(F, xs)) / len(xs))
    n = rng.choice((3, 4, 5))
    mean = rng.randint(10, 90)
    known = [rng.randint(max(1, mean - 20), mean + 20) for _ in range(n - 1)]
    last = mean * n - sum(known)
    while last <= 0:
        last, mean = last + n * 10, mean + 10
    listed = ", ".join(map(str, known))
    q = phrase(
        rng,
        (
            f"The average of {n} numbers is {mean}. {n - 1} of them are {listed}. What is the last number?",
            f"{n} numbers have a mean of {mean}. {n - 1} of them are {listed}. Find the remaining number.",
            f"{name} needs an average of {mean} points over {n} games. The first {n - 1} scores are {listed}. What must the last score be?",
            HeldOut(f"Over {n} days a shop averaged {mean} customers a day. On the first {n - 1} days it had {listed}. How many customers came on the last day?"),
            HeldOut(f"{n} bags weigh {mean} kg each on average. {n - 1} of them weigh {listed} kg. How heavy is the last bag in kg?"),
        ),
    )  # fmt: skip
    steps = [
        f"Total: {mean} * {n} = {mean * n}",
        f"Known: {' + '.join(map(str, known))} = {sum(known)}",
        f"Last: {mean * n} - {sum(known)} = {last}",
    ]
    return Problem(q, say(*steps), F(last), F(mean) * n - sum(known))


# --------------------------------------------------------------------------- combinations


def multi_step(rng: random.Random, d: int) -> Problem:
    name, (_, many) = rng.choice(NAMES), rng.choice(ITEMS)
    cur = currency(rng)
    kind = rng.choice({1: ("packs", "wage"), 2: ("share", "days"), 3: ("trip", "boxes")}[d])
    if kind == "packs":
        a, b, c = rng.randint(2, 30), rng.randint(2, 6), rng.randint(2, 12)
        age = rng.randint(7, 15)
        q = phrase(
            rng,
            (
                f"{name} has {a} {many} and buys {b} packs of {c}. How many {many} does {name} have now?",
                f"{name} starts with {a} {many}, then buys {b} packs with {c} {many} in each. How many {many} does {name} have altogether?",
                f"{name}, who is {age}, owns {a} {many} and gets {spell(b)} more packs of {c}. How many {many} does {name} own now?",
                HeldOut(f"There are {a} {many} in a drawer. {b} packs holding {c} each are added. How many {many} are in the drawer now?"),
                HeldOut(f"{name} already had {a} {many} before receiving {b} boxes of {c} {many} as a gift. What is {name}'s total now?"),
            ),
        )  # fmt: skip
        steps = [lab("Bought", S.worked(b, "*", c)), lab("Total", S.worked(a, "+", b * c))]
        return Problem(q, say(*steps), F(a + b * c), F(a) + F(b) * c)
    if kind == "wage":
        h, t = rng.randint(5, 25), rng.randint(2, 8)
        s = rng.randint(1, h * t - 1)
        q = phrase(
            rng,
            (
                f"{name} earns {money(h, cur)} an hour, works {t} hours and spends {money(s, cur)}. How much is left?",
                f"{name} is paid {money(h, cur)} per hour for {t} hours of work, then spends {money(s, cur)}. How much money is left?",
                f"{name} works {spell(t)} hours at {money(h, cur)} an hour and buys lunch for {money(s, cur)}. How much of the pay remains?",
                HeldOut(f"After a {t}-hour shift paying {money(h, cur)} an hour, {name} spends {money(s, cur)}. What does {name} still have?"),
                HeldOut(f"{name} earns {money(h, cur)} for every hour worked. After working {t} hours and paying {money(s, cur)} for a ticket, how much money does {name} keep?"),
            ),
        )  # fmt: skip
        steps = [lab("Earned", S.worked(h, "*", t)), lab("Left", S.worked(h * t, "-", s))]
        return Problem(q, say(*steps), F(h * t - s), F(h) * t - s)
    if kind == "share":
        k, each = rng.randint(2, 6), rng.randint(2, 12)
        c = rng.randint(6, 24)
        b = rng.randint(2, 6)
        g = b * c - k * each
        if g <= 0:
            b = -(-k * each // c) + 1
            g = b * c - k * each
        q = phrase(
            rng,
            (
                f"{name} buys {b} packs of {c} {many}, keeps {g} and shares the rest equally among {k} friends. How many does each friend get?",
                f"{name} has {b} packs with {c} {many} in each, keeps {g} and gives the rest to {k} friends, the same number to each. How many does each friend get?",
                HeldOut(f"{b} boxes hold {c} {many} each. After {name} takes {g}, the rest are split evenly into {k} bags. How many {many} go in each bag?"),
                HeldOut(f"{name} opens {b} packs of {c} {many}, sets {g} aside and hands the remaining ones out equally to {k} classmates. How many does each classmate get?"),
            ),
        )  # fmt: skip
        steps = [
            lab("", S.worked(b, "*", c)),
            lab("", S.worked(b * c, "-", g)),
            lab("Each", S.worked(k * each, "/", k)),
        ]
        return Problem(q, say(*steps), F(each), (F(b) * c - g) / k)
    if kind == "days":
        a, less = rng.randint(10, 40), rng.randint(1, 9)
        q = phrase(
            rng,
            (
                f"{name} reads {a} pages on Monday, twice as many on Tuesday, and {less} fewer on Wednesday than on Tuesday. How many pages is that in total?",
                f"On Monday {name} reads {a} pages. On Tuesday {name} reads double that, and on Wednesday {less} pages fewer than on Tuesday. How many pages did {name} read in the three days?",
                HeldOut(f"{name} runs {a} laps on Monday, two times as many on Tuesday, and on Wednesday {less} laps less than on Tuesday. How many laps does {name} run over the three days?"),
                HeldOut(f"A bakery sells {a} loaves on Monday. On Tuesday it sells twice Monday's number, and on Wednesday {less} fewer than on Tuesday. How many loaves does it sell over the three days?"),
            ),
        )  # fmt: skip
        tu, we = 2 * a, 2 * a - less
        steps = [
            lab("Tuesday", S.worked(a, "*", 2)),
            lab("Wednesday", S.worked(tu, "-", less)),
            lab("Total", total_of([a, tu, we])),
        ]
        return Problem(q, say(*steps), F(a + tu + we), F(a) * 5 - less)
    if kind == "trip":
        n, c, k = rng.randint(10, 40), rng.randint(5, 20), rng.randint(2, 5)
        extra = rng.randint(10, 100)
        left = k * rng.randint(1, (n * c + extra - 40) // k)  # whole prizes; bus >= 40
        bus = n * c + extra - left
        q = phrase(
            rng,
            (
                f"{n} students each pay {money(c, cur)} for a trip and the teacher adds {money(extra, cur)}. The bus costs {money(bus, cur)} and the rest buys {k} equal prizes. What does each prize cost?",
                f"Each of {n} students pays {money(c, cur)} for a trip, and the teacher puts in {money(extra, cur)}. After paying {money(bus, cur)} for the bus, the rest is spent on {k} prizes of equal price. How much is each prize?",
                HeldOut(f"A class of {n} collects {money(c, cur)} per student and gets {money(extra, cur)} from the teacher. The bus costs {money(bus, cur)}. The money left is spent on {k} prizes that cost the same. How much does each prize cost?"),
                HeldOut(f"{money(extra, cur)} from a teacher plus {money(c, cur)} from each of {n} students pays for a {money(bus, cur)} bus, and what is left buys {k} identical prizes. What is the price of one prize?"),
            ),
        )  # fmt: skip
        steps = [
            f"{n} * {c} = {n * c}",
            f"{n * c} + {extra} = {n * c + extra}",
            f"{n * c + extra} - {bus} = {left}",
            f"Prize: {left} / {k} = {fmt(F(left, k))}",
        ]
        return Problem(q, say(*steps), F(left, k), (F(n) * c + extra - bus) / k)
    a, b, bad = rng.randint(3, 12), rng.randint(10, 30), rng.randint(1, 5)
    p = rng.randint(2, 9)
    q = phrase(
        rng,
        (
            f"A grocer has {a} boxes of {b} {many}. In each box {bad} are spoiled. The rest sell for {money(p, cur)} each. How much money does the grocer make?",
            f"A shop gets {a} boxes with {b} {many} in each. {bad} in every box are bad and thrown away. Every good one sells for {money(p, cur)}. How much money does the shop get?",
            HeldOut(f"Each of {a} crates holds {b} {many}, and {bad} per crate cannot be sold. The rest are sold at {money(p, cur)} apiece. What is the total income?"),
            HeldOut(f"A grocer sells all the good {many} from {a} boxes of {b} for {money(p, cur)} each. If {bad} in each box are spoiled, how much money comes in?"),
        ),
    )  # fmt: skip
    good = b - bad
    steps = [
        f"Good per box: {b} - {bad} = {good}",
        f"Good: {a} * {good} = {a * good}",
        f"Money: {a * good} * {p} = {a * good * p}",
    ]
    return Problem(q, say(*steps), F(a * good * p), (F(a) * b - F(a) * bad) * p)
