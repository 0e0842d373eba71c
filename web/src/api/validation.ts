// Client-side checks mirroring the server's constrained types (server/core/types.py),
// for convenience only: the server decides, and its field errors are shown the same way.
export const USERNAME = /^[a-z][a-z0-9_.-]{2,31}$/;
export const INSTITUTION_CODE = /^[A-Z0-9][A-Z0-9_-]{1,31}$/;
export const ORG_NAME = /^[\p{L}\p{N}_ ·()（）-]+$/u;
export const PERSON_NAME = /^\p{L}+(?:[ ·'.-]\p{L}+)*\.?$/u;
export const REGION = /^\d{6}$/;
export const PASSWORD_MIN = 8;
