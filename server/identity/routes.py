"""HTTP edge of identity: login and tokens, institutions, departments, users."""

from __future__ import annotations

from server.container import services
from server.core.api import Call, Routes
from server.identity import schemas

routes = Routes(tag="identity")
ADMINS = {"platform_admin", "institution_admin"}


@routes.op(
    "POST",
    "/api/v1/auth/login",
    summary="Sign in",
    body=schemas.LoginRequest,
    response=schemas.TokenResponse,
    auth=False,
    errors=(401, 403, 429),
)
async def login(call: Call[schemas.LoginRequest, None]) -> schemas.TokenResponse:
    return await services(call).auth.login(call.body, call.request.remote)


@routes.op(
    "POST",
    "/api/v1/auth/refresh",
    summary="Exchange a refresh token for new tokens",
    body=schemas.RefreshRequest,
    response=schemas.TokenResponse,
    auth=False,
    errors=(401, 429),
)
async def refresh_tokens(call: Call[schemas.RefreshRequest, None]) -> schemas.TokenResponse:
    return await services(call).auth.refresh(call.body, call.request.remote)


@routes.op("POST", "/api/v1/auth/logout", summary="End this session (revokes its tokens)")
async def logout(call: Call[None, None]) -> None:
    await services(call).auth.logout(call.user)


@routes.op(
    "POST",
    "/api/v1/auth/password",
    summary="Change my password (ends all my sessions)",
    body=schemas.PasswordChange,
)
async def change_password(call: Call[schemas.PasswordChange, None]) -> None:
    await services(call).auth.change_password(call.user, call.body)


@routes.op(
    "POST",
    "/api/v1/auth/totp/setup",
    summary="Start TOTP enrolment (asks for the current password)",
    body=schemas.TotpSetupRequest,
    response=schemas.TotpSetup,
    errors=(409,),
    # The answer is the TOTP secret: not stored for a retry (a retry starts enrolment anew).
    idempotency="none",
)
async def setup_totp(call: Call[schemas.TotpSetupRequest, None]) -> schemas.TotpSetup:
    return await services(call).auth.setup_totp(call.user, call.body.current_password)


@routes.op(
    "POST",
    "/api/v1/auth/totp/confirm",
    summary="Finish TOTP enrolment with a first code (and the current password)",
    body=schemas.TotpConfirm,
    errors=(409,),
)
async def confirm_totp(call: Call[schemas.TotpConfirm, None]) -> None:
    await services(call).auth.confirm_totp(call.user, call.body)


@routes.op("GET", "/api/v1/me", summary="Who I am", response=schemas.UserOut)
async def get_me(call: Call[None, None]) -> schemas.UserOut:
    return await services(call).auth.me(call.user)


@routes.op(
    "GET",
    "/api/v1/institutions",
    summary="List institutions of the network",
    query=schemas.InstitutionQuery,
    response=schemas.InstitutionList,
)
async def list_institutions(call: Call[None, schemas.InstitutionQuery]) -> schemas.InstitutionList:
    items = await services(call).identity.list_institutions(call.query.kind)
    return schemas.InstitutionList(items=items)


@routes.op(
    "POST",
    "/api/v1/institutions",
    summary="Register an institution",
    body=schemas.InstitutionCreate,
    response=schemas.InstitutionOut,
    status=201,
    roles={"platform_admin"},
    errors=(409,),
)
async def create_institution(call: Call[schemas.InstitutionCreate, None]) -> schemas.InstitutionOut:
    return await services(call).identity.create_institution(call.user, call.body)


@routes.op(
    "GET",
    r"/api/v1/institutions/{institution_id:\d+}",
    summary="One institution",
    response=schemas.InstitutionOut,
)
async def get_institution(call: Call[None, None]) -> schemas.InstitutionOut:
    return await services(call).identity.get_institution(call.path_int("institution_id"))


@routes.op(
    "POST",
    r"/api/v1/institutions/{institution_id:\d+}/departments",
    summary="Add a department",
    body=schemas.DepartmentCreate,
    response=schemas.InstitutionOut,
    status=201,
    roles=ADMINS,
    errors=(404, 409),
)
async def create_department(call: Call[schemas.DepartmentCreate, None]) -> schemas.InstitutionOut:
    return await services(call).identity.create_department(
        call.user, call.path_int("institution_id"), call.body
    )


@routes.op(
    "GET",
    "/api/v1/users",
    summary="List accounts (administrators)",
    query=schemas.UserQuery,
    response=schemas.UserList,
    roles=ADMINS,
)
async def list_users(call: Call[None, schemas.UserQuery]) -> schemas.UserList:
    items = await services(call).identity.list_users(
        call.user, call.query.institution, call.query.role
    )
    return schemas.UserList(items=items)


@routes.op(
    "POST",
    "/api/v1/users",
    summary="Create an account",
    body=schemas.UserCreate,
    response=schemas.UserOut,
    status=201,
    roles=ADMINS,
    errors=(409,),
)
async def create_user(call: Call[schemas.UserCreate, None]) -> schemas.UserOut:
    return await services(call).identity.create_user(call.user, call.body)


@routes.op("GET", r"/api/v1/users/{user_id:\d+}", summary="One account", response=schemas.UserOut)
async def get_user(call: Call[None, None]) -> schemas.UserOut:
    return await services(call).identity.get_user(call.user, call.path_int("user_id"))


@routes.op(
    "POST",
    r"/api/v1/users/{user_id:\d+}/disable",
    summary="Disable an account (ends its sessions and closes its sockets at once)",
    response=schemas.AccountState,
    roles=ADMINS,
    errors=(404, 409),
)
async def disable_user(call: Call[None, None]) -> schemas.AccountState:
    return await services(call).auth.set_active(call.user, call.path_int("user_id"), False)


@routes.op(
    "POST",
    r"/api/v1/users/{user_id:\d+}/enable",
    summary="Enable a disabled account",
    response=schemas.AccountState,
    roles=ADMINS,
    errors=(404, 409),
)
async def enable_user(call: Call[None, None]) -> schemas.AccountState:
    return await services(call).auth.set_active(call.user, call.path_int("user_id"), True)


@routes.op(
    "POST",
    r"/api/v1/users/{user_id:\d+}/unlock",
    summary="Lift a lockout after failed sign-ins",
    response=schemas.AccountState,
    roles=ADMINS,
    errors=(404, 409),
)
async def unlock_user(call: Call[None, None]) -> schemas.AccountState:
    return await services(call).auth.unlock(call.user, call.path_int("user_id"))


@routes.op(
    "POST",
    r"/api/v1/users/{user_id:\d+}/sessions/end",
    summary="Sign an account out everywhere (ends its sessions, closes its sockets)",
    response=schemas.AccountState,
    roles=ADMINS,
    errors=(404, 409),
)
async def end_user_sessions(call: Call[None, None]) -> schemas.AccountState:
    return await services(call).auth.end_user_sessions(call.user, call.path_int("user_id"))
