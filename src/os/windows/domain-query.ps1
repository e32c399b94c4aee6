$cs = Get-CimInstance -ClassName Win32_ComputerSystem; 'Domain=' + $cs.Domain; 'PartOfDomain=' + $cs.PartOfDomain
