$p = (Get-Content -Raw '@file@').Trim(); Remove-Item -Force '@file@'; ([adsi]'WinNT://./@user@,user').SetPassword($p); 'password of @user@ set'
