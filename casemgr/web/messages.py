"""Messages the services give in English that the pages show translated.

Services name fields and rules in English (the API's language); the pages pass each
message through the catalogue, so those listed here read in the reader's language and any
other one is shown as the service wrote it. Listing them here gets them extracted.
"""

from __future__ import annotations

from casemgr.web.i18n import N_

SERVICE_MESSAGES = (
    N_("must not be blank"),
    N_("must not be in the future"),
    N_("is not correct"),
    N_("is not correct (or was used already)"),
    N_("is not valid"),
    N_("is too long"),
    N_("choose one from the list"),
    N_("choose from the list"),
    N_("must be a date (YYYY-MM-DD)"),
    N_("must differ from the current password"),
    N_("does not match the new password"),
    N_("must not be before occurred_on"),
    N_("must look like 2026-2027"),
    N_("a grade from 1 to 12"),
    N_("1-100 characters"),
    N_("1-200 characters"),
    N_("1-32 characters"),
    N_("no such school"),
    N_("give at least one role"),
    N_("a monitor outcome needs a re-check date"),
    N_("must not contain control characters"),
    N_("must not contain invisible format characters (such as zero-width joiners)"),
    N_("must not contain bidirectional override or isolate characters"),
    N_("3-64 characters: lower-case letters a-z, digits and . _ - only"),
    N_("at least 10 characters"),
    N_("That username is taken."),
    N_("The password was changed meanwhile; sign in again."),
    N_("Too many failed attempts. Try again later."),
    N_("each participant must be an active staff member of the school"),
    N_("is not an id"),
    # pairings (care.services)
    N_("choose at least one mentor"),
    N_("must not name a mentor twice"),
    N_("one_to_one takes exactly one mentor"),
    N_("many_to_one takes two or more mentors"),
    N_("must be the mentor"),
    N_("must be one of mentor_ids"),
    N_("each mentor must be an active teacher, class teacher or counselor of the student's school"),
    N_("must not be before the pairing started"),
    N_("This file has a live pairing; end it first."),
    N_("This pairing has ended already."),
    N_("The file is closed: nothing can be added to it."),
    # emergency access (care.emergency)
    N_("state the reason in at least 15 characters"),
    N_("You reach this student's file already: no emergency access is needed."),
    # transfers (students.transfers, students.identity)
    N_("must be 18 characters"),
    N_("must be 17 digits (0-9) followed by a digit or X"),
    N_("check digit does not match (GB 11643)"),
    N_("contains an impossible birth date"),
    N_("a class of the school's current school year"),
    N_("This request was approved already."),
    N_("This request was declined already."),
    N_("This request has expired; the receiving school can ask again."),
    N_("This request was decided already."),
    N_("The student has left this school meanwhile."),
    N_("The class asked for has no class in the current school year."),
    N_("No free student number could be found in the receiving school."),
    # home-visit requirements (care.visits)
    N_("a whole number from 0 to 12"),
    N_("must not be before the current school year"),
)
